import os
import sys

from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

log, settings = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.inputs.inventory import run_inventory  # noqa: E402
from audiofeat.preflight import growth_report  # noqa: E402

index_dir = settings.store_dir()
counts = run_inventory(
    settings.input_dir, settings.input_list, os.path.dirname(snakemake.output.files),  # noqa: F821
    index_path=os.path.join(index_dir, "stat_index.sqlite"),
    state_path=snakemake.params.state,  # noqa: F821
    target_files=settings.shard.target_files, target_audio_seconds=settings.shard.target_audio_seconds,
    max_hours=settings.audio.max_hours,
    threads=snakemake.threads,  # noqa: F821
)
log.info("inventory: %(files)d files, %(unique)d unique contents in %(shards)d shards, %(rehashed)d hashed, "
         "%(unreadable)d unreadable", counts)
line, warning = growth_report(counts["new_audio_s"], counts["new_files"], target_sr=settings.audio.target_sr,
                              store_dir=index_dir)
log.info("%s", line)
if warning:
    log.warning("%s", warning)
    print(f"audiofeat: warning: {warning}", file=sys.__stderr__, flush=True)
finish()
