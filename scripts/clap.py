import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _job import start  # noqa: E402

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.config import apply_torch_threads  # noqa: E402
from audiofeat.stages import run_clap  # noqa: E402

apply_torch_threads(snakemake.threads)  # noqa: F821
profile = run_clap(snakemake.input.table, snakemake.output.table, snakemake.output.profile,  # noqa: F821
                   snakemake.config)  # noqa: F821
log.info(profile.log_line())
