"""What the workflow tells Snakemake's scheduler: thread claims by pending work, and a prompt end of the run."""
import subprocess
import sys
import threading

import pytest

from audiofeat.clap.model import checkpoint_sha256
from audiofeat.config import validate_config
from audiofeat.inventory import write_tsv
from audiofeat.scheduling import cancel_wakeup_timers, pending_work, shard_job_threads
from audiofeat.stages import clap_key, features_key, ingest_key, open_store, write_jsonl

from conftest import REPO


def _config(tmp_path, **clap):
    return validate_config({"input_dir": str(tmp_path), "cache": {"dir": str(tmp_path / "cache")},
                            "perf": {"device": "cpu"},
                            "clap": {"checkpoint": "", "allow_random_weights": True, **clap}})


def _tables(tmp_path, durations):
    keys = [f"{i:02d}" * 16 for i in range(len(durations))]
    shard = tmp_path / "shard.tsv"
    write_tsv(shard, ("content_key", "path"), [{"content_key": k, "path": f"/in/{k}.wav"} for k in keys])
    ingest = tmp_path / "ingest.jsonl"
    write_jsonl(ingest, [{"content_key": k, "status": "ok", "audio": {"duration_s": d}}
                         for k, d in zip(keys, durations)] + [{"content_key": "ff" * 16, "status": "error"}])
    return keys, shard, ingest


def test_pending_work_counts_what_the_store_lacks(tmp_path):
    config = _config(tmp_path)
    keys, shard, ingest = _tables(tmp_path, [1.0, 23.0, 4.0])  # 1, 4 and 1 CLAP windows (10 s, hop 5 s)
    store = open_store(config)
    assert pending_work("ingest", shard, config) == 3
    assert pending_work("features", ingest, config) == 3  # the failed row is not work
    assert pending_work("clap", ingest, config) == 6
    store.put(ingest_key(keys[0], 48000), b"x")
    store.put(features_key(keys[1], config), b"x")
    store.put(clap_key(keys[1], config, weights="random(seed=0)", precision="fp32"), b"x")
    assert pending_work("ingest", shard, config) == 2
    assert pending_work("features", ingest, config) == 2
    assert pending_work("clap", ingest, config) == 2
    # Another precision's artifact is not this run's.
    store.put(clap_key(keys[0], config, weights="random(seed=0)", precision="fp16-autocast"), b"x")
    assert pending_work("clap", ingest, config) == 2
    assert shard_job_threads("clap", ingest, config, 8) == 2
    assert shard_job_threads("features", ingest, config, 1) == 1
    with pytest.raises(ValueError):
        pending_work("report", ingest, config)


def test_threads_claim_everything_when_the_work_is_unknown(tmp_path):
    config = _config(tmp_path)
    keys, shard, ingest = _tables(tmp_path, [1.0, 1.0])
    store = open_store(config)
    for key in keys:
        store.put(features_key(key, config), b"x")
    assert shard_job_threads("features", ingest, config, 4) == 1  # nothing to do still claims one thread
    assert shard_job_threads("features", tmp_path / "not-written-yet.jsonl", config, 4) == 4
    disabled = validate_config({**config, "cache": {**config["cache"], "enabled": False}})
    assert pending_work("features", ingest, disabled) == 2  # a disabled store is never read


def test_clap_work_with_a_checkpoint_whose_digest_is_not_remembered_yet(tmp_path):
    checkpoint = tmp_path / "clap.pt"
    checkpoint.write_bytes(b"not hashed by the scheduler" * 1000)
    config = _config(tmp_path, checkpoint=str(checkpoint), allow_random_weights=False)
    keys, _, ingest = _tables(tmp_path, [1.0, 1.0])
    digest = checkpoint_sha256(checkpoint, None)
    open_store(config).put(clap_key(keys[0], config, weights=f"laion:sha256:{digest}", precision="fp32"), b"x")
    assert pending_work("clap", ingest, config) == 2  # digest unknown here: every file counts
    checkpoint_sha256(checkpoint, tmp_path / "cache" / "checkpoints")  # what a CLAP job remembers
    assert pending_work("clap", ingest, config) == 1


def test_cancel_wakeup_timers_ends_snakemakes_and_only_those():
    import types

    from snakemake.scheduling.job_scheduler import JobScheduler

    woken = threading.Semaphore(0)
    # Snakemake's own wake-up, as its scheduler starts it after a submission (0.2 s here, so that a wake-up that
    # was not cancelled fires within the wait below).
    JobScheduler._schedule_reevalutation(types.SimpleNamespace(_open_jobs=woken), 0.2)
    others = threading.Timer(60, lambda: None)
    others.start()
    try:
        assert cancel_wakeup_timers() == 1
        assert others.is_alive() and not others.finished.is_set()
        assert not woken.acquire(timeout=0.6)  # cancelled: it never fires
        assert cancel_wakeup_timers() == 0
        JobScheduler._schedule_reevalutation(types.SimpleNamespace(_open_jobs=woken), 0.2)
        assert woken.acquire(timeout=5)  # the control: left alone, it fires
    finally:
        others.cancel()


SPARE_EXIT_COLLECTION = """
import gc
from audiofeat.scheduling import spare_exit_collection

class Node:
    pass

before = Node()
before.self = before  # a reference cycle made during the run
tracked = len(gc.get_objects())
spare_exit_collection()
print(gc.get_freeze_count() >= tracked)
del before
print(gc.collect())  # the run's objects are no longer traced
after = Node()
after.self = after
del after
print(gc.collect())  # what is allocated afterwards is collected as usual
"""


def test_spare_exit_collection_freezes_the_run_heap_and_only_it():
    done = subprocess.run([sys.executable, "-c", SPARE_EXIT_COLLECTION], capture_output=True, text=True, check=True,
                          cwd=str(REPO))
    frozen, before, after = done.stdout.split()
    assert frozen == "True" and before == "0" and int(after) >= 1
