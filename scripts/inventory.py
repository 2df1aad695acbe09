import os
import sys

from _job import finish, start  # scripts/ is on sys.path: Snakemake adds each script's folder

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.inventory import run_inventory  # noqa: E402
from audiofeat.preflight import store_estimate  # noqa: E402

config = snakemake.config  # noqa: F821
index_dir = config["cache"]["dir"] if config["cache"]["enabled"] else os.path.join(config["results_dir"], "work")
counts = run_inventory(
    config["input_dir"], config["input_list"], os.path.dirname(snakemake.output.files),  # noqa: F821
    index_path=os.path.join(index_dir, "stat_index.sqlite"),
    state_path=os.path.join(config["results_dir"], "inventory.state.json"),
    target_files=config["shard"]["target_files"], target_audio_seconds=config["shard"]["target_audio_seconds"],
    threads=snakemake.threads,  # noqa: F821
)
log.info("inventory: %(files)d files, %(unique)d unique contents in %(shards)d shards, %(rehashed)d hashed, "
         "%(unreadable)d unreadable", counts)
shards_dir = os.path.join(os.path.dirname(snakemake.output.files), "shards")  # noqa: F821
estimate, free = store_estimate([os.path.join(shards_dir, n) for n in sorted(os.listdir(shards_dir))], config)
log.info("store: this run adds about %.2f GB, %s GB free", estimate / 1e9, "?" if free is None else f"{free / 1e9:.2f}")
if free is not None and estimate > free:
    print(f"audiofeat: warning: this run will write about {estimate / 1e9:.2f} GB to the store and its disk has "
          f"{free / 1e9:.2f} GB free: free space or point CACHE_DIR elsewhere (the run stops cleanly when full)",
          file=sys.__stderr__, flush=True)
finish()
