# Config validation (schema + environment overrides), the run's extractors, and the input functions of every rule.
import functools
import json
import os
import sys

sys.path.insert(0, workflow.basedir)  # the audiofeat package next to the Snakefile, installed or not

from audiofeat import _speedups
from audiofeat.clap.checkpoint import resolve_weights
from audiofeat.config.layout import bookkeeping as bookkeeping_path
from audiofeat.config.layout import move_old_layout
from audiofeat.config.schema import resolve_threads
from audiofeat.extractors.devices import local_gpus
from audiofeat.extractors import EXTRACTORS as REGISTERED
from audiofeat.extractors.clap import ClapSettings
from audiofeat.extractors import DecodeExtractor, build_extractors, section_schemas
from audiofeat.inputs.inventory import content_shard, input_fingerprint
from audiofeat.faults import Fault
from audiofeat.preflight import PreflightError, preflight
from snakemake.exceptions import WorkflowError
from audiofeat.extractors.scheduling import shard_job_threads
from audiofeat.config.settings import Settings, validated_config

# Environment variables (PERF_THREADS, CACHE_DIR, ...) override config/config.yaml; --config wins over both.
_validated = validated_config(config, sections=section_schemas(), protected=workflow.config_settings.config or {})
config.clear()
config.update(_validated)
SETTINGS = Settings.from_config(config)


# Configuration problems (weights, folders, device) stop a run before its first job, one line each. Snakemake
# calls onstart only when it is about to run jobs: --unlock, --list-*, --cleanup-metadata and --dry-run are never
# stopped by them.
onstart:
    try:
        warnings = preflight(SETTINGS, check_device=workflow.local_exec)
    except PreflightError as problems:
        for line in str(problems).splitlines():
            print(f"audiofeat: {line}", file=sys.stderr)
        raise WorkflowError("audiofeat: the settings above stop the run before any job") from None
    for warning in warnings:
        print(f"audiofeat: warning: {warning}", file=sys.stderr)


# The CLAP checkpoint's digest is part of its artifacts' identity: known here once (hashed by its stat, or the
# published file downloaded) so that the rules' params below say exactly what the jobs will compute. Weights that
# cannot be had here (no network for `auto`) stay unknown: a run's preflight names the problem.
if workflow.is_main_process and "clap" in SETTINGS.extractors:
    try:
        resolve_weights(SETTINGS.of(ClapSettings), SETTINGS.cache)
    except Fault:
        pass

# What each artifact is (version, parameters): the extractors' identities, used by the rules' params and by the
# jobs' thread claims exactly as the jobs use them for the store.
DECODER = DecodeExtractor.from_settings(SETTINGS)
EXTRACTORS = build_extractors(SETTINGS)
RESULTS = SETTINGS.results_dir
# On a cluster, a shard's CPU jobs (decoding, the CPU extractors, and its assembly when CLAP does not run) are one
# submission, and its CLAP job with its assembly another, on a GPU (Snakemake's groups; local runs ignore them).
SHARD_CPU, SHARD_GPU = "shard_cpu", "shard_gpu"
THREADS = resolve_threads(SETTINGS.perf.threads)
# A local run gives each CLAP job one GPU of the node's (listed once, here): Snakemake runs at most that many at
# once, so a job never waits for a GPU another holds. `--resources gpu=N` on the command line still wins.
GPUS = local_gpus(SETTINGS, local=workflow.local_exec)
if GPUS and "gpu" not in workflow.global_resources:
    # Snakemake's own way to declare a resource from a Snakefile (its mutexes use it); no public equivalent.
    workflow.register_resource("gpu", len(GPUS))
# Snakemake's imports are in memory for the whole run: freeze them now, so that no collection (during the run
# or at exit, also when there is nothing to do) traces them again; onsuccess/onerror freeze the run's objects.
_speedups.spare_exit_collection()


# A results folder written before the bookkeeping folder is carried over to it (files renamed, mtimes kept), so
# that its finished jobs stay finished.
if workflow.is_main_process:
    if _moved := move_old_layout(RESULTS, list(REGISTERED)):
        print(f"audiofeat: moved {', '.join(_moved)} into {bookkeeping_path(RESULTS)}", file=sys.stderr)


def results(path):
    """What users open: manifests/, dataset/, embeddings.npy, summary.json, the manifest schema, report/."""
    return os.path.join(RESULTS, path)


def bookkeeping(path):
    """Everything else: tables, inventory, profiles, progress, logs, Snakemake's benchmarks, state."""
    return bookkeeping_path(RESULTS, path)


def get_matrices():
    """``{extractor: [its matrix in results_dir, the matrix's index in bookkeeping]}`` of the chosen extractors."""
    return {name: [results(e.matrix[0]), bookkeeping(e.matrix[0].replace(".npy", ".index.json"))]
            for name, e in EXTRACTORS.items() if e.matrix}


def get_inventory_state(wildcards):
    """Changes whenever a file is added, removed, renamed or changed under the inputs (reruns the inventory)."""
    return input_fingerprint(SETTINGS.input_dir, SETTINGS.input_list)


def tables_in(folder):
    return sorted(name[: -len(".tsv")] for name in os.listdir(folder) if name.endswith(".tsv"))


def get_shards():
    """Shard names (the extractors' jobs), known once the inventory checkpoint has run."""
    return tables_in(checkpoints.inventory.get().output.shards)


def get_shard_path_tables(wildcards):
    """A shard's path tables: its own, or one per path group when more paths share its contents than
    shard.target_files (``<shard>.g<count>-<k>``)."""
    return [bookkeeping(f"inventory/paths/{group}.tsv") for group in path_groups_by_shard().get(wildcards.shard, [])]


@functools.lru_cache(maxsize=2)
def _groups_listed(folder, mtime_ns):
    groups = {}
    for group in tables_in(folder):
        groups.setdefault(content_shard(group), []).append(group)
    return groups


def path_groups_by_shard():
    """``{shard: its path groups}``, listed once per change of the inventory's paths folder."""
    folder = checkpoints.inventory.get().output.paths
    return _groups_listed(folder, os.stat(folder).st_mtime_ns)


def get_shard_tables(wildcards):
    """``decode`` and each extractor's shard tables, by stage (finalize's named inputs)."""
    return {stage: [bookkeeping(f"{stage}/{shard}.jsonl") for shard in get_shards()]
            for stage in ("decode", *EXTRACTORS)}


def get_shard_stage_tables(wildcards):
    """The ``decode`` and extractor tables of a shard, by stage (its assembly's named inputs)."""
    return {stage: bookkeeping(f"{stage}/{wildcards.shard}.jsonl") for stage in ("decode", *EXTRACTORS)}


def get_shard_summaries(wildcards):
    """Every shard's assembly summary (finalize merges them)."""
    return [bookkeeping(f"assembled/{shard}.json") for shard in get_shards()]


def get_shard_profiles(wildcards):
    """Every shard job's timing profile (the run report sums them)."""
    return [bookkeeping(f"timings/{stage}/{shard}.json") for stage in ("decode", *EXTRACTORS)
            for shard in get_shards()]


def get_shard_threads(extractor):
    """A shard job's threads: THREADS, but no more than it has pieces of work missing from the store."""

    def inner(wildcards, input):
        return shard_job_threads(extractor, input[0], SETTINGS, THREADS)

    return inner


def get_final_outputs():
    outputs = [
        results("summary.json"),
        results("report/index.html"),
    ]
    if SETTINGS.strict:
        outputs.append(bookkeeping("status/strict_ok"))
    return outputs


def print_summary():
    """The run's last line, from summary.json (printed on success and on failure alike)."""
    path = results("summary.json")
    if os.path.exists(path):
        with open(path) as handle:
            data = json.load(handle)
        where = f"; failures by cause in {results('report/index.html')}" if data["failed"] else ""
        kept = results("manifests") if SETTINGS.outputs.manifests == "files" else results("dataset")
        print(f"audiofeat: {data['ok']} ok, {data['failed']} failed; manifests in {kept}{where}")
