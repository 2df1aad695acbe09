from _job import finish, start  # scripts/ is on sys.path: Snakemake adds each script's folder

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.stages import run_clap  # noqa: E402

profile = run_clap(snakemake.input.table, snakemake.output.table, snakemake.output.profile,  # noqa: F821
                   snakemake.config, threads=snakemake.threads,  # noqa: F821
                   previous_jsonl=snakemake.params.previous)  # noqa: F821
log.info(profile.log_line())
finish()
