from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

job = snakemake  # noqa: F821 - injected by Snakemake
log, settings = start(job)
from audiofeat.extractors.runner import run_decode  # noqa: E402

profile = run_decode(job.input.shard, job.output.table, job.output.profile, settings, threads=job.threads,
                     progress_json=job.params.progress)
log.info(profile.log_line())
finish()
