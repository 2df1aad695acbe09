import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _job import start  # noqa: E402

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.report import write_report  # noqa: E402

config = snakemake.config  # noqa: F821
numbers = write_report(snakemake.input.profiles, snakemake.input.summary,  # noqa: F821
                       os.path.join(config["results_dir"], "manifest.jsonl"), config,
                       snakemake.output.html, snakemake.output.tsv)  # noqa: F821
log.info("report: %s", numbers)
