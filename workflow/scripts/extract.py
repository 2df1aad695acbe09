from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

job = snakemake  # noqa: F821 - injected by Snakemake
log, settings = start(job)
from audiofeat.extractors.devices import use_one_gpu  # noqa: E402
from audiofeat.extractors.runner import run_extractor  # noqa: E402

claim = use_one_gpu([gpu for gpu in job.params.gpus.split(",") if gpu])  # before torch: CUDA reads it once
if claim is not None:
    log.info("GPU %s for this job%s", claim.gpu, " (shared: every GPU is held)" if claim.shared else "")

profile = run_extractor(job.params.extractor, job.input.table, job.output.table, job.output.profile, settings,
                        threads=job.threads, previous_jsonl=job.params.previous,
                        progress_json=job.params.progress, run_summary=job.params.run_summary,
                        shard_tsv=job.input.rows)
log.info(profile.log_line())
finish()
