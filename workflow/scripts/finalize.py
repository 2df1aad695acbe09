from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

job = snakemake  # noqa: F821 - injected by Snakemake
log, settings = start(job)
from audiofeat.finalize import run_finalize, summary_line  # noqa: E402
from audiofeat.report import write_report  # noqa: E402

extractors = job.params.extractors
summary, file_seconds = run_finalize(
    job.input.files, {stage: list(job.input[stage]) for stage in ("ingest", *extractors)}, extractors,
    manifests_dir=job.params.manifests_dir, manifest_jsonl=job.output.jsonl, summary_json=job.output.summary,
    schema_json=job.output.schema, embeddings_npy=job.output.get("embeddings"), cache=settings.cache)
log.info("%s", summary_line(summary))
for path in summary["failed_files"]:
    log.info("failed: %s", path)
# The report is written by the same job: a job of its own cost a process start and a second reading of
# manifest.jsonl on every run.
log.info("report: %s", write_report(job.input.profiles, summary, file_seconds, settings, job.output.html,
                                    job.output.tsv, job.params.run_state))
finish()
