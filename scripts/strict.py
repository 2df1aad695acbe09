import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _job import start  # noqa: E402

log = start(snakemake)  # noqa: F821 - injected by Snakemake
with open(snakemake.input.summary, encoding="utf-8") as handle:  # noqa: F821
    summary = json.load(handle)
if summary["failed"]:
    log.error("strict: %d inputs failed: %s", summary["failed"], "; ".join(summary["failed_files"][:20]))
    sys.exit(f"strict: {summary['failed']} inputs failed (see {snakemake.input.summary})")  # noqa: F821
open(snakemake.output.flag, "w").close()  # noqa: F821
