"""The artifact store: keys, atomic writes, corruption detection, concurrency, garbage collection."""
import io
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
from audiofeat.store.trailer import read_payload

from conftest import last_used_at


def key(content="ab" * 16, extractor="features", version="1", params=None, suffix=".json"):
    return ArtifactKey(content, extractor, version, params_hash(params or {"n_mfcc": 20}), suffix)


def test_reuse_if_and_only_if_content_version_and_params_match(tmp_path):
    store = ArtifactStore(tmp_path)
    stored = store.put(key(), b"payload", {"x": 1})
    path, meta, digest = store.get(key())
    assert read_payload(path) == b"payload" and meta == {"x": 1} and digest == blake2b_bytes(b"payload")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # one file per artifact
    assert stored == (path, meta, digest)  # put returns what get will
    assert store.get(key(content="cd" * 16)) is None
    assert store.get(key(version="2")) is None
    assert store.get(key(params={"n_mfcc": 13})) is None
    assert store.get(key(extractor="clap")) is None
    assert (store.hits, store.misses) == (1, 4)


def test_params_hash_is_order_independent_and_value_sensitive():
    assert params_hash({"a": 1, "b": 2}) == params_hash({"b": 2, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 1.5})


@pytest.mark.parametrize("damage", ["truncate", "flip", "footer", "record"])
def test_corrupt_artifacts_are_discarded_not_fatal(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    path = store.put(key(), b"0123456789" * 100, {"x": 1}).path
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[500:]
    elif damage == "flip":
        data[10] ^= 0xFF
    elif damage == "footer":
        data[-20] ^= 0xFF  # the payload's size as the footer records it
    else:
        data[data.index(b'"x":1')] = ord("{")  # the record is not JSON
    path.write_bytes(bytes(data))
    assert store.get(key()) is None
    assert not path.exists() and store.discarded == 1  # removed, to be recomputed
    store.put(key(), b"fresh")
    assert read_payload(store.get(key()).path) == b"fresh"


def _sidecar_era(store, k, payload: bytes) -> Path:
    """An artifact as stores written before trailers hold it: the payload, and a ``.meta.json`` sidecar."""
    path = store.path(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    record = {"digest": blake2b_bytes(payload), "size": len(payload), "meta": {"x": 2}, "key": k.__dict__,
              "created": time.time()}
    path.with_name(path.name + ".meta.json").write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("damage", ["none", "delete_sidecar", "garbage_sidecar", "flip"])
def test_sidecar_era_artifacts_are_read_and_checked_as_they_are(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    path = _sidecar_era(store, key(), b"0123456789" * 100)
    sidecar = path.with_name(path.name + ".meta.json")
    if damage == "delete_sidecar":
        sidecar.unlink()
    elif damage == "garbage_sidecar":
        sidecar.write_text("{not json")
    elif damage == "flip":
        path.write_bytes(b"1" + path.read_bytes()[1:])
    found = store.get(key())
    if damage == "none":
        assert found == (path, {"x": 2}, blake2b_bytes(b"0123456789" * 100)) and path.read_bytes()[:10] == b"0123456789"
    else:
        assert found is None and not path.exists() and not sidecar.exists()


def _rehashes(monkeypatch) -> list:
    """Records each payload the store hashes."""
    hashed = []
    real = store_module.blake2b_file

    def counting(path, **kwargs):
        hashed.append(Path(path).name)
        return real(path, **kwargs)

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
    path = _sidecar_era(store, key(), b"payload" * 50)  # as written before stats were recorded
    sidecar = path.with_name(path.name + ".meta.json")
    hashed = _rehashes(monkeypatch)
    assert store.get(key()) is not None and store.get(key()) is not None
    assert hashed == [path.name]
    assert "sealed_stat" in json.loads(sidecar.read_text())


def _lookups_as_nobody(root, queue):
    os.setgid(65534)
    os.setuid(65534)
    store = ArtifactStore(root)
    found, secret = store.get(key()), store.get(key(content="cd" * 16))
    queue.put((found and read_payload(found.path), secret))


def test_another_users_lookups_never_discard_what_they_cannot_seal_or_read():
    assert os.geteuid() == 0, "needs root to run a lookup as another user (CI runs as root: make test-deps)"
    shared = Path(tempfile.mkdtemp(prefix="audiofeat-shared-store-"))  # pytest's tmp_path is private to root
    try:
        shared.chmod(0o755)
        store = ArtifactStore(shared)
        path = store.put(key(), b"payload" * 50).path
        secret = store.put(key(content="cd" * 16), b"secret" * 50).path
        os.utime(path)  # a copied store, say: the stat is no longer the sealed one, so a lookup rehashes, reseals
        secret.chmod(0o600)
        for folder in (p for p in shared.rglob("*") if p.is_dir()):
            folder.chmod(0o777)  # group-writable, as a shared store is: deleting would succeed
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        reader = context.Process(target=_lookups_as_nobody, args=(shared, queue))
        reader.start()
        reader.join(60)
        assert reader.exitcode == 0
        assert queue.get(timeout=5) == (b"payload" * 50, None)  # found though it could not reseal; unreadable: a miss
        assert path.exists() and secret.exists()
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
    orphan.write_bytes(b"neither trailer nor sidecar")
    last_used_at(intact, time.time() - 3 * 86400)
    intact_stat = intact.stat()
    assert store.verify() == {"checked": 3, "discarded": 2}  # ... verify rehashes everything
    assert not damaged.exists() and not orphan.exists() and intact.exists()
    # An intact, sealed artifact is only read: its stat, LRU clock (atime) included, is as it was.
    assert (intact.stat().st_atime_ns, intact.stat().st_mtime_ns) == (intact_stat.st_atime_ns, intact_stat.st_mtime_ns)
    assert store.get(key()) is None and store.get(key(content="cd" * 16)) is not None


def test_artifacts_are_created_with_the_umask_so_a_shared_store_is_readable(tmp_path):
    previous = os.umask(0o022)
    try:
        path = ArtifactStore(tmp_path).put(key(), b"payload").path
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


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
        assert read_payload(found.path) in (b"first" * 2000, b"secnd" * 2000)
        assert blake2b_bytes(read_payload(found.path)) == found.digest
    assert store.discarded == 0 and not list(tmp_path.rglob("*.tmp"))


def test_gc_by_ttl_and_size_keeps_protected_and_recent(tmp_path):
    store = ArtifactStore(tmp_path)
    now = time.time()
    paths = []
    for i in range(6):
        path = store.put(key(content=f"{i:032x}"), b"x" * 1000).path
        last_used_at(path, now - (6 - i) * 3600)  # artifact 0 is the oldest
        paths.append(path)
    removed = store.collect_garbage(ttl_hours=4.5, protect={str(paths[0])}, now=now)
    assert removed["removed_files"] == 1  # artifact 1 (5 h old); artifact 0 is protected
    assert paths[0].exists() and not paths[1].exists()
    size = max(p.stat().st_size for p in paths[2:])  # 1 kB and its trailer, give or take a digit of its record
    removed = store.collect_garbage(max_gb=3.2 * size / 1e9, now=now)  # room for 3 of the 5 left
    assert removed["removed_files"] == 2
    assert [p.exists() for p in paths] == [False, False, False, True, True, True]
    stats = store.stats()
    assert stats["total_files"] == 3
    assert stats["extractors"]["features"]["bytes"] == sum(p.stat().st_size for p in paths[3:])


def _stored_and_used_ago(store, now, hours_by_key):
    """1 kB under each key, last used that many hours before ``now``."""
    for k, hours in hours_by_key.items():
        last_used_at(store.put(k, b"x" * 1000).path, now - hours * 3600)


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


def test_readers_of_the_payloads_stop_at_their_end(tmp_path):
    """A WAV or ``.npy`` artifact, trailer and all, is read as its payload by libsndfile, FFmpeg and numpy."""
    import av
    import numpy as np
    import soundfile as sf

    from audiofeat.inputs.wav import wav_bytes

    y = np.random.default_rng(0).uniform(-0.5, 0.5, 4800).astype(np.float32)
    store = ArtifactStore(tmp_path)
    wav = store.put(key(extractor="wav", suffix=".wav"), wav_bytes(y, 48000)).path
    assert wav.stat().st_size > len(wav_bytes(y, 48000))  # the trailer is there
    assert np.array_equal(sf.read(wav, dtype="float32")[0], y)
    with av.open(str(wav)) as container:
        decoded = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])
    assert np.array_equal(decoded, y)
    buffer = io.BytesIO()
    np.save(buffer, y.reshape(10, -1))
    npy = store.put(key(extractor="clap_segments", suffix=".npy"), buffer.getvalue()).path
    assert np.array_equal(np.load(npy), y.reshape(10, -1))
