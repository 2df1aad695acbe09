import os

from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

job = snakemake  # noqa: F821 - injected by Snakemake
log, settings = start(job)
from audiofeat.config.layout import remove_retired_shards  # noqa: E402
from audiofeat.extractors import build_extractors  # noqa: E402
from audiofeat.outputs.run import run_finalize, summary_line  # noqa: E402
from audiofeat.report.html import write_report  # noqa: E402

extractors = build_extractors(settings)
summaries = {os.path.basename(path)[: -len(".json")]: path for path in job.input.summaries}
result = run_finalize(
    summaries, job.input.errors, extractors, dataset_dir=job.params.dataset_dir,
    manifests_dir=job.params.manifests_dir, assembled_dir=job.params.assembled_dir, summary_json=job.output.summary,
    schema_json=job.output.schema, matrices=job.params.matrices, cache=settings.cache,
    tables={stage: list(job.input[stage]) for stage in ("decode", *extractors)},
    write_manifests=settings.outputs.manifests == "files", flags=settings.flags)
log.info("%s", summary_line(result.summary))
for path in result.summary["failed_files"]:
    log.info("failed: %s", path)
if retired := remove_retired_shards(settings.results_dir, set(summaries)):
    log.info("removed %d bookkeeping files of shards a re-plan retired", retired)
# The report is written by the same job: a job of its own cost a process start on every run.
clap_weights = extractors["clap"].params.weights if "clap" in extractors else None
log.info("report: %s", write_report(job.input.profiles, result, settings, job.output.html, job.output.tsv,
                                    job.params.run_state, clap_weights=clap_weights))
finish()
