from _job import finish, start  # scripts/ is on sys.path: Snakemake adds each script's folder

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.stages import run_finalize, summary_line  # noqa: E402

job = snakemake  # noqa: F821
summary = run_finalize(job.input.files, job.input.ingest, job.input.features, job.input.clap,
                       manifests_dir=job.params.manifests_dir, manifest_jsonl=job.output.jsonl,
                       embeddings_npy=job.output.embeddings, summary_json=job.output.summary, config=job.config)
log.info("%s", summary_line(summary))
for path in summary["failed_files"]:
    log.info("failed: %s", path)
finish()
