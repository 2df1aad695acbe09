"""What the workflow tells Snakemake: how many threads a shard job can use, and that a run has ended.

Snakemake-specific glue kept out of the Snakefile so that it is testable without a run.
"""
from __future__ import annotations

import dataclasses
import gc
import threading


def cancel_wakeup_timers() -> int:
    """Cancel Snakemake's pending scheduler wake-up timers in this process; returns how many were pending.

    Snakemake's job rate limiter (``--max-jobs-per-timespan``, 100/1s by default) starts a non-daemon 1 s
    ``threading.Timer`` after each job submission to wake its scheduler, and the interpreter waits for the last
    one at exit: every run that executed a job ended about 1 s after its last job (measured: 1.0 s of the 7.7 s
    rerun after adding one file to 1,000). Call it from ``onsuccess``/``onerror``, when the scheduler has nothing
    left to wake. Other timers of the process are left alone.
    """
    pending = [t for t in threading.enumerate()
               if isinstance(t, threading.Timer) and not t.finished.is_set()
               and getattr(t.function, "__module__", "") == "snakemake.scheduling.job_scheduler"]
    for timer in pending:
        timer.cancel()
    return len(pending)


def spare_exit_collection() -> None:
    """Keep the cyclic collector, at exit above all, from tracing what the Snakemake process holds now.

    At exit CPython clears every module and runs the cyclic collector over what is left; with Snakemake's
    imports (its persistence layer, SQLAlchemy, pandas through the SLURM plugin) that took 0.35 s after every
    run here, and 0.03 s with the heap frozen (a real run, the process's end timed from its last statement).
    ``gc.freeze()`` moves every object tracked so far into the permanent generation, which collections skip:
    objects are still freed by reference counting, and what is allocated afterwards is collected as usual.
    The workflow calls it once its configuration is read (a run with nothing to do ends without any handler:
    1.56-1.62 s before, 1.06-1.13 s after, over 1,000 files) and again from ``onsuccess``/``onerror``;
    Snakemake's own clean-up (locks, temporary files, log handlers) still runs after it.
    """
    gc.freeze()


def pending_work(stage: str, table: str, config: dict) -> int:
    """How many independent pieces of work a shard job of ``stage`` has: inputs to decode (``ingest``, from the
    shard's inventory table), files to analyse (``features``) or windows to embed (``clap``, both from the
    shard's ingest table) whose artifact is not in the store. Reads tables and stats artifacts; never hashes.

    Raises FileNotFoundError while ``table`` is not written yet.
    """
    from .inventory import read_tsv
    from .stages import clap_key, features_key, ingest_key, open_store, read_jsonl

    store = open_store(config)

    def missing(key) -> bool:
        return not (store.reuse and store.path(key).exists())

    if stage == "ingest":
        template = ingest_key("", config["audio"]["target_sr"])
        return sum(missing(dataclasses.replace(template, content_key=row["content_key"])) for row in read_tsv(table))
    rows = [row for row in read_jsonl(table) if row["status"] == "ok"]
    if stage == "features":
        template = features_key("", config)
        return sum(missing(dataclasses.replace(template, content_key=row["content_key"])) for row in rows)
    if stage != "clap":
        raise ValueError(f"unknown stage {stage!r}")
    from .clap import clap_precision
    from .clap.model import MODEL_SAMPLE_RATE, known_weights, likely_device
    from .clap.windows import plan_windows, window_and_hop

    clap_cfg, seg_cfg = config["clap"], config["segment"]
    window, hop = window_and_hop(seg_cfg, MODEL_SAMPLE_RATE)

    def windows(row: dict) -> int:
        n = max(1, round(row["audio"]["duration_s"] * MODEL_SAMPLE_RATE))
        return len(plan_windows(n, window, hop, segment=seg_cfg["enabled"]))

    weights = known_weights(clap_cfg["checkpoint"], allow_random_weights=clap_cfg["allow_random_weights"],
                            model_name=clap_cfg["model"], cache_dir=config["cache"]["dir"])
    if weights is None:  # the weights' digest is not known yet: the job will compute every file
        return sum(windows(row) for row in rows)
    # The job's device without importing torch in Snakemake's process.
    precision = clap_precision(likely_device(config["perf"]["device"]), clap_cfg["enable_amp"])
    template = clap_key("", config, weights=weights, precision=precision)
    return sum(windows(row) for row in rows if missing(dataclasses.replace(template, content_key=row["content_key"])))


def shard_job_threads(stage: str, table: str, config: dict, max_threads: int) -> int:
    """Threads a shard job claims: ``max_threads``, but no more than it has pieces of work (at least one).

    After a few files are added to a finished run, a shard job finds all but a few artifacts in the store; a
    claim of all the cores would make Snakemake run the shard's features and CLAP jobs (and the other shards'
    jobs) one after the other, each mostly waiting on its own start-up. Snakemake evaluates this when the job's
    input is written (asking again before it schedules the job); before that, the full claim stands.
    """
    try:
        pending = pending_work(stage, table, config)
    except FileNotFoundError:  # the table is not written yet (our jobs write whole tables, atomically)
        return max_threads
    return max(1, min(max_threads, pending))
