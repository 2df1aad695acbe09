# Config validation (schema + environment overrides) and the input functions of every rule.
import json
import os
import sys

sys.path.insert(0, workflow.basedir)  # the audiofeat package next to the Snakefile, installed or not

from audiofeat.config import apply_env_overrides, resolve_threads, validate_config
from audiofeat.decode import DECODE_VERSION, decode_params
from audiofeat.features import FEATURES_VERSION, features_params
from audiofeat.clap import CLAP_VERSION
from audiofeat.inventory import input_fingerprint
from audiofeat.preflight import preflight
from audiofeat.scheduling import cancel_wakeup_timers, shard_job_threads, spare_exit_collection
from audiofeat.store import params_hash

# Environment variables (PERF_THREADS, CACHE_DIR, ...) override config/config.yaml; --config wins over both.
_validated = validate_config(
    apply_env_overrides(
        config, os.environ, protected=workflow.config_settings.config or {}
    )
)
config.clear()
config.update(_validated)

# Configuration problems (weights, folders, device) stop the run here, before any job, one line each.
if workflow.is_main_process:
    for warning in preflight(config, check_device=workflow.local_exec):
        print(f"audiofeat: warning: {warning}", file=sys.stderr)

RESULTS = config["results_dir"]
THREADS = resolve_threads(config["perf"]["threads"])
# Snakemake's imports are in memory for the whole run: freeze them now, so that no collection (during the run
# or at exit, also when there is nothing to do) traces them again; onsuccess/onerror freeze the run's objects.
spare_exit_collection()


def results(path):
    return os.path.join(RESULTS, path)


def get_inventory_state(wildcards):
    """Changes whenever a file is added, removed or renamed under the inputs (reruns the inventory)."""
    return input_fingerprint(config["input_dir"], config["input_list"])


def get_shards():
    """Shard names, known once the inventory checkpoint has run."""
    shards_dir = checkpoints.inventory.get().output.shards
    return sorted(name[: -len(".tsv")] for name in os.listdir(shards_dir) if name.endswith(".tsv"))


def get_shard_outputs(stage):
    def inner(wildcards):
        return [results(f"{stage}/{shard}.jsonl") for shard in get_shards()]

    return inner


def get_shard_profiles(wildcards):
    """Every shard job's timing profile (the run report sums them)."""
    return [results(f"timings/{stage}/{shard}.json") for stage in ("ingest", "features", "clap")
            for shard in get_shards()]


def get_shard_threads(stage):
    """A shard job's threads: THREADS, but no more than it has files (or CLAP windows) missing from the store."""

    def inner(wildcards, input):
        return shard_job_threads(stage, input[0], config, THREADS)

    return inner


def get_ingest_version():
    return f"v{DECODE_VERSION}-{params_hash(decode_params(config['audio']['target_sr']))}"


def get_features_version():
    params = features_params(config["features"], config["audio"]["target_sr"])
    return f"v{FEATURES_VERSION}-{params_hash(params)}"


def get_clap_version():
    """CLAP version, model, weights source (path, size and mtime of the checkpoint) and segment settings."""
    ckpt_path = config["clap"]["checkpoint"]
    stat = ""
    if ckpt_path not in ("", "auto") and os.path.exists(ckpt_path):
        st = os.stat(ckpt_path)
        stat = f"{st.st_size}:{st.st_mtime_ns}"
    settings = {
        "clap": {k: v for k, v in config["clap"].items() if k != "max_batch_audio_seconds"},
        "segment": config["segment"],
        "checkpoint_stat": stat,
        "device": config["perf"]["device"],
    }
    return f"v{CLAP_VERSION}-{params_hash(settings)}"


def get_final_outputs():
    outputs = [
        results("manifest.jsonl"),
        results("embeddings.npy"),
        results("summary.json"),
        results("report/index.html"),
    ]
    if config["strict"]:
        outputs.append(results("status/strict_ok"))
    return outputs


def print_summary():
    """The run's last line, from summary.json (printed on success and on failure alike)."""
    path = results("summary.json")
    if os.path.exists(path):
        with open(path) as handle:
            data = json.load(handle)
        where = f"; failures by cause in {results('report/index.html')}" if data["failed"] else ""
        print(f"audiofeat: {data['ok']} ok, {data['failed']} failed; manifests in {results('manifests')}{where}")
