import json
import sys

from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

log, _settings = start(snakemake)  # noqa: F821 - injected by Snakemake
with open(snakemake.input.summary, encoding="utf-8") as handle:  # noqa: F821
    summary = json.load(handle)
if summary["failed"]:
    message = f"strict: {summary['failed']} inputs failed (see {snakemake.input.summary})"  # noqa: F821
    log.error("%s: %s", message, "; ".join(summary["failed_files"][:20]))
    print(message, file=sys.__stderr__)  # the terminal, besides the rule's log
    sys.exit(1)
open(snakemake.output.flag, "w").close()  # noqa: F821
finish()
