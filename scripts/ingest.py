import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _job import start  # noqa: E402

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.stages import run_ingest  # noqa: E402

profile = run_ingest(snakemake.input.shard, snakemake.output.table, snakemake.output.profile,  # noqa: F821
                     snakemake.config)  # noqa: F821
log.info(profile.log_line())
