"""The artifact store: keys, atomic writes, corruption detection, concurrency, garbage collection."""
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from audiofeat.store import artifacts as store_module
from audiofeat.store.artifacts import ArtifactKey, ArtifactStore, blake2b_bytes, params_hash


def key(content="ab" * 16, extractor="features", version="1", params=None, suffix=".json"):
    return ArtifactKey(content, extractor, version, params_hash(params or {"n_mfcc": 20}), suffix)


def test_reuse_if_and_only_if_content_version_and_params_match(tmp_path):
    store = ArtifactStore(tmp_path)
    stored = store.put(key(), b"payload", {"x": 1})
    path, meta, digest = store.get(key())
    assert path.read_bytes() == b"payload" and meta == {"x": 1} and digest == blake2b_bytes(b"payload")
    assert stored == (path, meta, digest)  # put returns what get will
    assert store.get(key(content="cd" * 16)) is None
    assert store.get(key(version="2")) is None
    assert store.get(key(params={"n_mfcc": 13})) is None
    assert store.get(key(extractor="clap")) is None
    assert (store.hits, store.misses) == (1, 4)


def test_params_hash_is_order_independent_and_value_sensitive():
    assert params_hash({"a": 1, "b": 2}) == params_hash({"b": 2, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 1.5})


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_sidecar", "garbage_sidecar"])
def test_corrupt_artifacts_are_discarded_not_fatal(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    path = store.put(key(), b"0123456789" * 100).path
    sidecar = path.with_name(path.name + ".meta.json")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "delete_sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text("{not json")
    assert store.get(key()) is None
    assert not (path.exists() and sidecar.exists())  # removed, to be recomputed
    store.put(key(), b"fresh")
    assert store.get(key())[0].read_bytes() == b"fresh"


def _rehashes(monkeypatch) -> list:
    """Records each payload the store hashes."""
    hashed = []
    real = store_module.blake2b_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(store_module, "blake2b_file", counting)
    return hashed


def test_a_hit_whose_stat_is_unchanged_is_not_rehashed(tmp_path, monkeypatch):
    hashed = _rehashes(monkeypatch)
    store = ArtifactStore(tmp_path)
    path = store.put(key(), b"0123456789" * 100).path
    assert path.stat().st_mtime < time.time() - 1.5  # sealed: backdated, so that any later write changes it
    for _ in range(3):
        assert store.get(key())[0] == path
    assert hashed == []
    os.utime(path)  # same bytes, new mtime (a copy, a restore): rehashed once, then sealed again
    assert store.get(key()) is not None and store.get(key()) is not None
    assert hashed == [path.name]


def test_old_sidecars_are_rehashed_once_then_sealed(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    path = store.put(key(), b"payload" * 50).path
    sidecar = path.with_name(path.name + ".meta.json")
    record = json.loads(sidecar.read_text())
    del record["sealed_stat"]  # as written before stats were recorded
    sidecar.write_text(json.dumps(record))
    hashed = _rehashes(monkeypatch)
    assert store.get(key()) is not None and store.get(key()) is not None
    assert hashed == [path.name]
    assert "sealed_stat" in json.loads(sidecar.read_text())


def _lookups_as_nobody(root, queue):
    os.setgid(65534)
    os.setuid(65534)
    store = ArtifactStore(root)
    found, secret = store.get(key()), store.get(key(content="cd" * 16))
    queue.put((found and found.path.read_bytes(), secret))


def test_another_users_lookups_never_discard_what_they_cannot_seal_or_read():
    assert os.geteuid() == 0, "needs root to run a lookup as another user (CI runs as root: make test-deps)"
    shared = Path(tempfile.mkdtemp(prefix="audiofeat-shared-store-"))  # pytest's tmp_path is private to root
    try:
        shared.chmod(0o755)
        store = ArtifactStore(shared)
        path = store.put(key(), b"payload" * 50).path
        secret = store.put(key(content="cd" * 16), b"secret" * 50).path
        os.utime(path)  # a copied store, say: the stat is no longer the sealed one, so a lookup rehashes, reseals
        secret.with_name(secret.name + ".meta.json").chmod(0o600)
        for folder in (p for p in shared.rglob("*") if p.is_dir()):
            folder.chmod(0o777)  # group-writable, as a shared store is: deleting would succeed
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        reader = context.Process(target=_lookups_as_nobody, args=(shared, queue))
        reader.start()
        reader.join(60)
        assert reader.exitcode == 0
        assert queue.get(timeout=5) == (b"payload" * 50, None)  # found though it could not reseal; unreadable: a miss
        assert path.exists() and secret.exists() and secret.with_name(secret.name + ".meta.json").exists()
    finally:
        shutil.rmtree(shared)


def test_verify_finds_damage_that_keeps_the_stat(tmp_path):
    store = ArtifactStore(tmp_path)
    damaged = store.put(key(), b"0123456789" * 100).path
    intact = store.put(key(content="cd" * 16), b"abcdefghij" * 100).path
    st = damaged.stat()
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0xFF  # bit rot: same size, and the mtime put back as it was
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.get(key()) is not None  # a lookup trusts the unchanged stat ...
    orphan = store.path(key(content="ef" * 16))
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"payload without a sidecar")  # a writer killed between payload and sidecar
    intact_sidecar = intact.with_name(intact.name + ".meta.json").stat().st_mtime_ns
    assert store.verify() == {"checked": 3, "discarded": 2}  # ... verify rehashes everything
    assert not damaged.exists() and not orphan.exists() and intact.exists()
    # An intact, sealed artifact is only read: no sidecar rewritten (nor its LRU clock moved) per artifact.
    assert intact.with_name(intact.name + ".meta.json").stat().st_mtime_ns == intact_sidecar
    assert store.get(key()) is None and store.get(key(content="cd" * 16)) is not None


def test_artifacts_are_created_with_the_umask_so_a_shared_store_is_readable(tmp_path):
    previous = os.umask(0o022)
    try:
        path = ArtifactStore(tmp_path).put(key(), b"payload").path
    finally:
        os.umask(previous)
    for written in (path, path.with_name(path.name + ".meta.json")):
        assert written.stat().st_mode & 0o777 == 0o644, written


def test_disabled_store_never_returns_artifacts(tmp_path):
    ArtifactStore(tmp_path).put(key(), b"x")
    store = ArtifactStore(tmp_path, reuse=False)
    assert store.get(key()) is None and store.misses == 1


def _writer(root, n, payload):
    store = ArtifactStore(root)
    for i in range(n):
        store.put(key(content=f"{i:032x}"), payload * 2000)
        assert store.get(key(content=f"{i:032x}")) is not None


def test_two_processes_writing_the_same_store(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    # Different bytes under the same keys, so that an interleaved or torn write would show.
    procs = [ctx.Process(target=_writer, args=(tmp_path, 40, payload)) for payload in (b"first", b"secnd")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ArtifactStore(tmp_path)
    for i in range(40):
        found = store.get(key(content=f"{i:032x}"))
        assert found.path.read_bytes() in (b"first" * 2000, b"secnd" * 2000)
        assert blake2b_bytes(found.path.read_bytes()) == found.digest
    assert store.discarded == 0 and not list(tmp_path.rglob("*.tmp"))


def test_gc_by_ttl_and_size_keeps_protected_and_recent(tmp_path):
    store = ArtifactStore(tmp_path)
    now = time.time()
    paths = []
    for i in range(6):
        path = store.put(key(content=f"{i:032x}"), b"x" * 1000).path
        last_used = now - (6 - i) * 3600  # artifact 0 is the oldest; the LRU clock is the sidecar's mtime
        os.utime(path.with_name(path.name + ".meta.json"), (last_used, last_used))
        paths.append(path)
    removed = store.collect_garbage(ttl_hours=4.5, protect={str(paths[0])}, now=now)
    assert removed["removed_files"] == 1  # artifact 1 (5 h old); artifact 0 is protected
    assert paths[0].exists() and not paths[1].exists()
    removed = store.collect_garbage(max_gb=3.5e-6, now=now)  # room for 3 of the 5 left
    assert removed["removed_files"] == 2
    assert [p.exists() for p in paths] == [False, False, False, True, True, True]
    stats = store.stats()
    assert stats["total_files"] == 3 and stats["extractors"]["features"]["bytes"] == 3000


def _stored_and_used_ago(store, now, hours_by_key):
    """1 kB under each key, last used that many hours before ``now`` (the LRU clock is the sidecar's mtime)."""
    for k, hours in hours_by_key.items():
        path = store.put(k, b"x" * 1000).path
        os.utime(path.with_name(path.name + ".meta.json"), (now - hours * 3600,) * 2)


def test_a_hit_refreshes_the_lru_clock_so_gc_removes_what_was_not_used(tmp_path):
    store = ArtifactStore(tmp_path)
    older, newer = key(content="aa" * 16), key(content="bb" * 16)
    _stored_and_used_ago(store, time.time(), {older: 2, newer: 1})
    assert store.get(older) is not None  # a run reads it: it is the recently used one now
    store.collect_garbage(max_gb=1.5e-6)  # room for one
    assert store.get(older) is not None and store.get(newer) is None


def test_gc_spares_what_any_run_used_within_the_grace_period(tmp_path):
    store = ArtifactStore(tmp_path)
    now = time.time()
    old, recent = key(content="aa" * 16), key(content="bb" * 16)
    _stored_and_used_ago(store, now, {old: 2, recent: 0.5})
    assert store.collect_garbage(max_gb=1e-9, grace_hours=1, now=now)["removed_files"] == 1
    assert store.get(old) is None and store.get(recent) is not None
    assert store.collect_garbage(ttl_hours=0.1, grace_hours=1, now=now)["removed_files"] == 0
