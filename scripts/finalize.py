from _job import finish, start  # scripts/ is on sys.path: Snakemake adds each script's folder

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.report import write_report  # noqa: E402
from audiofeat.stages import run_finalize, summary_line  # noqa: E402

job = snakemake  # noqa: F821
summary, file_seconds = run_finalize(
    job.input.files, job.input.ingest, job.input.features, job.input.clap, manifests_dir=job.params.manifests_dir,
    manifest_jsonl=job.output.jsonl, embeddings_npy=job.output.embeddings, summary_json=job.output.summary,
    config=job.config)
log.info("%s", summary_line(summary))
for path in summary["failed_files"]:
    log.info("failed: %s", path)
# The report is written by the same job: a job of its own cost a process start and a second reading of
# manifest.jsonl on every run.
log.info("report: %s", write_report(job.input.profiles, summary, file_seconds, job.config, job.output.html,
                                    job.output.tsv, job.params.run_state))
finish()
