"""Tuning advice for the run report: rules that fire on the run's own measured numbers and say what to change.

Each rule reads a :class:`RunFacts` and returns one sentence or None; :func:`advise` runs them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Thresholds, each the point past which the change the rule names repays itself on this pipeline.
STARVED_BUSY = 0.6  # model busy under this while...
STARVED_WAIT_SHARE = 0.25  # ...it waited this share of its loop on prepared windows
STARTUP_SHARE = 0.25  # CLAP set-up (torch import, model build) above this share of its jobs' time
DISK_LOW_BYTES = 5 * 1024**3  # under 5 GiB free: a few thousand minutes of 48 kHz float32 WAV (11.5 MB a minute)
DISK_LOW_SHARE = 0.05


@dataclass
class RunFacts:
    """What the rules read: per-stage totals (``report.stage_totals``) and facts of the machine and the run."""

    totals: dict
    device_setting: str = "auto"  # perf.device
    clap_device: str = ""  # the device the CLAP jobs ran on ("" when no forward pass ran)
    gpu_visible: bool = False
    cache_enabled: bool = True
    cache_dir: str = ""
    previous_cache_dir: str | None = None  # the last finished run's, from this results folder; None if none
    rerun_lookups: tuple[int, int] | None = None  # (hits, misses) of the shard jobs that ran since that run
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None


def model_busy_fraction(totals: dict[str, dict]) -> float | None:
    """Time in the CLAP forward pass / wall time of the CLAP jobs, per forward worker (None when no forward
    pass ran). Near 1: the model is the bottleneck; low: it waits for decoding, loading or writing."""
    clap = totals.get("clap")
    if not clap or not clap["seconds"].get("clap_forward") or clap["worker_s"] <= 0:
        return None
    return clap["seconds"]["clap_forward"] / clap["worker_s"]


def model_starved(facts: RunFacts) -> str | None:
    busy = model_busy_fraction(facts.totals)
    if busy is None:
        return None
    clap = facts.totals["clap"]
    loop = clap["seconds"].get("clap_loop", 0.0)
    wait = clap["seconds"].get("clap_input_wait", 0.0)
    if busy >= STARVED_BUSY or loop <= 0 or wait / loop < STARVED_WAIT_SHARE:
        return None
    return (f"The CLAP model was busy {busy:.0%} of its jobs' time and waited for prepared windows {wait / loop:.0%} "
            "of its loop: preparation starves it. Give CLAP jobs more threads (perf.threads; on CUDA each thread "
            "prepares windows), or put cache.dir on faster storage.")


def startup_heavy(facts: RunFacts) -> str | None:
    clap = facts.totals.get("clap")
    if not clap or not clap["seconds"].get("clap_forward") or clap["wall_s"] <= 0:
        return None
    share = clap["seconds"].get("setup", 0.0) / clap["wall_s"]
    if share <= STARTUP_SHARE:
        return None
    jobs = f"{clap['jobs']} job" + ("s" if clap["jobs"] != 1 else "")
    return (f"CLAP jobs ({jobs}) spent {share:.0%} of their time starting (importing torch, loading the model): "
            "use larger shards (raise shard.target_files and shard.target_audio_seconds).")


def cpu_despite_gpu(facts: RunFacts) -> str | None:
    if not facts.gpu_visible or not facts.clap_device.startswith("cpu"):
        return None
    why = ("perf.device is 'cpu'" if facts.device_setting == "cpu"
           else "torch saw no usable CUDA device (a CPU-only torch build, or CUDA_VISIBLE_DEVICES)")
    return f"CLAP ran on the CPU while an NVIDIA GPU is visible: {why}. Set perf.device: auto (or cuda) for it."


def cold_store_on_rerun(facts: RunFacts) -> str | None:
    if not facts.cache_enabled or facts.previous_cache_dir is None or facts.rerun_lookups is None:
        return None
    hits, misses = facts.rerun_lookups
    if hits or not misses:
        return None
    if facts.previous_cache_dir != facts.cache_dir:
        return (f"Nothing came from the store although this results folder was finished before with cache.dir "
                f"{facts.previous_cache_dir} (now {facts.cache_dir}): point cache.dir (CACHE_DIR) back at it to "
                "reuse that work.")
    return (f"Nothing came from the store ({facts.cache_dir}) although this results folder was finished before "
            "with it: it was emptied (cache.ttl_hours, cache.max_gb, another run's gc) or every extractor version "
            "or parameter changed.")


def disk_nearly_full(facts: RunFacts) -> str | None:
    free, total = facts.disk_free_bytes, facts.disk_total_bytes
    if free is None or not total or (free >= DISK_LOW_BYTES and free / total >= DISK_LOW_SHARE):
        return None
    return (f"The disk holding cache.dir has {free / 1024**3:.1f} GiB free ({free / total:.0%}): free space, bound "
            "the store (cache.max_gb) or point CACHE_DIR elsewhere before the next run.")


RULES: tuple[Callable[[RunFacts], str | None], ...] = (
    model_starved, startup_heavy, cpu_despite_gpu, cold_store_on_rerun, disk_nearly_full)


def advise(facts: RunFacts) -> list[str]:
    """Every rule's advice that applies to this run, in the order of :data:`RULES`."""
    return [text for rule in RULES if (text := rule(facts))]
