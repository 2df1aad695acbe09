import os

from _job import finish, start  # scripts/ is on sys.path: Snakemake adds each script's folder

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.report import write_report  # noqa: E402

config = snakemake.config  # noqa: F821
numbers = write_report(snakemake.input.profiles, snakemake.input.summary,  # noqa: F821
                       os.path.join(config["results_dir"], "manifest.jsonl"), config,
                       snakemake.output.html, snakemake.output.tsv)  # noqa: F821
log.info("report: %s", numbers)
finish()
