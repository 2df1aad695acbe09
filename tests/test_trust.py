"""Results you can trust: a changed file is noticed, a fault of the machine is never a file's result.

Real Snakemake runs over real recordings; the full disk is a real tmpfs, the read-only results folder a real
read-only bind mount (the test machine's CI runs as root, as `make test-deps` does).
"""
import base64
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from audiofeat.faults import FAULT, VERDICT, InputChanged, classify, fault_line
from audiofeat.inputs.media import DecodeError, InputUnreadable
from audiofeat.inputs.inventory import iter_inputs
from audiofeat.outputs.manifest import Source
from audiofeat.store.artifacts import ArtifactStore, blake2b_file

from conftest import read_manifests, REAL_RECORDINGS, created_since, run_snakemake, write_config


@pytest.mark.parametrize("exc, kind", [
    (DecodeError("no audio stream"), VERDICT),
    (InputUnreadable("cannot read file: Permission denied"), VERDICT),
    (ValueError("non-finite statistics"), VERDICT),
    (RuntimeError("CLAP forward pass: shape mismatch"), VERDICT),
    (OSError(errno.ENOSPC, "No space left on device", "/c/x.wav"), FAULT),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), FAULT),
    (OSError(errno.EIO, "Input/output error"), FAULT),
    (PermissionError(errno.EACCES, "Permission denied"), FAULT),
    (OSError(errno.EROFS, "Read-only file system"), FAULT),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), FAULT),
    (MemoryError(), FAULT),
    (InputChanged("/in/a.wav"), FAULT),
    (sqlite3.OperationalError("database or disk is full"), FAULT),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), FAULT),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory"), FAULT),
])
def test_classifier_table(exc, kind):
    assert classify(exc) == kind


def test_fault_lines_name_the_folder_the_cause_and_the_fix(tmp_path):
    roots = {"cache.dir": str(tmp_path / "cache"), "results_dir": str(tmp_path / "results")}
    full = fault_line(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache/artifacts/wav/x")), roots)
    assert full.startswith(f"cache.dir {tmp_path / 'cache'} is full: ") and "bytes free" in full
    assert full.endswith("point CACHE_DIR elsewhere, then rerun the same command")
    readonly = fault_line(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "results/clap/a.jsonl")), roots)
    assert readonly.startswith(f"results_dir {tmp_path / 'results'} cannot be written (Read-only file system")
    assert "\n" not in full + readonly
    assert fault_line(MemoryError(), roots).startswith("out of memory; lower perf.threads or shard.target_files")


def _media(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for source in REAL_RECORDINGS[:count]:
        shutil.copy(source, folder / source.name)
    return folder


def _comparable(manifest, cache_dir):
    """A manifest without what differs between two correct runs: timings, the store's place, float noise."""
    manifest = json.loads(json.dumps(manifest))
    manifest.pop("timings", None)
    manifest["source"]["path"] = os.path.basename(manifest["source"]["path"])
    if "audio" in manifest:
        manifest["audio"]["wav"] = os.path.relpath(manifest["audio"]["wav"], cache_dir)
    if "clap" in manifest:
        manifest["clap"]["embedding"] = [round(v, 4) for v in manifest["clap"]["embedding"]]
    return manifest


def _manifests(results, cache_dir):
    return {m["source"]["path"].rsplit("/", 1)[1]: _comparable(m, cache_dir)
            for m in read_manifests(results)}


def _store_is_whole(cache_dir):
    """Every payload has its sidecar and digest, and no temporary file is left."""
    leftovers = [p for p in Path(cache_dir).rglob("*.tmp")]
    assert not leftovers, leftovers
    assert ArtifactStore(cache_dir).verify()["discarded"] == 0


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The reference: eight real recordings run on a healthy machine."""
    work = tmp_path_factory.mktemp("clean")
    media = _media(work / "media", 8)
    config = write_config(work / "c.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(work / "cache")})
    run_snakemake(work, config)
    return _manifests(work / "results", work / "cache")


@contextmanager
def _tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_fails_the_job_in_one_line_then_the_same_command_completes(tmp_path, clean_run):
    media = _media(tmp_path / "media", 8)
    with _tmpfs(tmp_path / "cache", "1m") as cache:
        config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                              cache={"dir": str(cache)})
        full = run_snakemake(tmp_path, config, check=False)
        output = full.stdout + full.stderr
        assert full.returncode != 0
        assert "audiofeat: warning: this run will write about" in output  # the inventory's estimate said so
        assert f"audiofeat: cache.dir {cache} is full: " in output
        assert "then rerun the same command" in output and "Traceback" not in output
        assert not list((tmp_path / "results" / "bookkeeping" / "decode").glob("*.jsonl"))  # the failed job's table is not kept
        assert not (tmp_path / "results" / "summary.json").exists()
        _store_is_whole(cache)

        subprocess.run(["mount", "-o", "remount,size=200m", str(cache)], check=True)  # the fix: more space
        run_snakemake(tmp_path, config)
        assert _manifests(tmp_path / "results", cache) == clean_run
        _store_is_whole(cache)


def test_results_folder_read_only_mid_run_then_the_same_command_completes(tmp_path, clean_run):
    """The per-file manifests' folder is read-only when finalize, the last job, writes into it."""
    media = _media(tmp_path / "media", 8)
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results", cache={"dir": str(cache)})
    manifests = tmp_path / "results" / "manifests"
    manifests.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(manifests), str(manifests)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(manifests)], check=True)
        broken = run_snakemake(tmp_path, config, check=False)
        output = broken.stdout + broken.stderr
        assert broken.returncode != 0
        assert f"audiofeat: results_dir {tmp_path / 'results'} cannot be written (Read-only file system" in output
        assert "Traceback" not in output
        assert not (tmp_path / "results" / "summary.json").exists()
        assert list((tmp_path / "results" / "bookkeeping" / "clap").glob("*.jsonl"))  # the shard jobs had finished
    finally:
        subprocess.run(["umount", str(manifests)], check=True)  # the fix
    started = time.time()
    run_snakemake(tmp_path, config)
    assert created_since(cache, started) == {}  # nothing the shard jobs computed was lost
    assert _manifests(tmp_path / "results", cache) == clean_run
    _store_is_whole(cache)


def test_changed_bytes_under_the_same_name_are_noticed_and_never_poison_the_store(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    first, second, other, third = REAL_RECORDINGS[0], REAL_RECORDINGS[1], REAL_RECORDINGS[-1], REAL_RECORDINGS[-2]
    shutil.copy(first, media / "a.wav")
    shutil.copy(second, media / "b.wav")
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results", cache={"dir": str(cache)})
    a, b = str(media / "a.wav"), str(media / "b.wav")
    run_snakemake(tmp_path, config)
    before = {m["source"]["path"]: m for m in read_manifests(tmp_path / "results")}

    # 1. Edited in place (same inode, same name) after a finished run: that file only is recomputed.
    with open(media / "a.wav", "r+b") as handle:
        handle.truncate(0)
        handle.write(other.read_bytes())
    started = time.time()
    run_snakemake(tmp_path, config)
    assert created_since(cache, started) == {"wav": 1, "features": 1, "clap": 1}
    after = {m["source"]["path"]: m for m in read_manifests(tmp_path / "results")}
    assert after[a]["source"]["content_key"] == blake2b_file(media / "a.wav") != before[a]["source"]["content_key"]
    assert after[a]["audio"]["codec"] == "vorbis" and after[a]["audio"] != before[a]["audio"]
    assert after[b] == before[b]

    # 2. Replaced between the inventory and the decoding of one run: a fault, and nothing under the old key.
    shutil.copy(first, media / "a.wav")
    run_snakemake(tmp_path, config, "--cores", "2", "inventory")  # the inventory alone (a target after a flag)
    old_key = blake2b_file(media / "a.wav")
    shutil.rmtree(cache / "artifacts")  # so that any artifact under the old key would be this run's
    (media / "a.wav").unlink()
    shutil.copy(third, media / "a.wav")
    # As within one run: Snakemake's params trigger would rerun the inventory, here it must not (mtime only).
    done = run_snakemake(tmp_path, config, "--rerun-triggers", "mtime", check=False)
    assert done.returncode != 0
    assert f"audiofeat: input '{a}' changed during the run" in done.stdout + done.stderr
    assert not list((cache / "artifacts").rglob(f"{old_key}*")), "an artifact under the old key"
    run_snakemake(tmp_path, config)  # the same command again: the inventory sees the new bytes
    manifests = {m["source"]["path"]: m for m in read_manifests(tmp_path / "results")}
    assert manifests[a]["source"]["content_key"] == blake2b_file(third)
    assert all(m["status"] == "ok" for m in manifests.values())


def test_names_that_are_not_utf8_or_awkward_are_processed_like_any_other(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    latin1 = os.fsdecode(b"latin1_\xe9t\xe9.wav")
    awkward = [latin1, "new\nline.wav", "-leading-dash.wav", "$(touch pwned).wav"]
    for name, source in zip(awkward, REAL_RECORDINGS):
        shutil.copy(source, media / name)
    os.symlink("loop.wav", media / "loop.wav")  # a symlink loop and a dangling link: each its own error
    os.symlink(media / "missing.wav", media / "dangling.wav")
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")})
    run_snakemake(tmp_path, config)
    manifests = read_manifests(tmp_path / "results")
    by_name = {os.path.basename(m["source"]["path"]): m for m in manifests}
    escaped = by_name["latin1_\\xe9t\\xe9.wav"]
    assert escaped["status"] == "ok"
    assert base64.b64decode(escaped["source"]["path_bytes"]) == os.fsencode(str(media / latin1))
    assert Source(**escaped["source"]).os_path == str(media / latin1)  # the path back, for os functions
    assert all(by_name[n]["status"] == "ok" and "path_bytes" not in by_name[n]["source"] for n in awkward[1:])
    assert by_name["dangling.wav"]["status"] == by_name["loop.wav"]["status"] == "error"
    assert (tmp_path / "results" / "manifests" / (latin1 + ".json")).exists()  # the per-file manifest's own name
    assert not (tmp_path / "pwned").exists()
    listing = tmp_path / "inputs.txt"  # an input list naming it in its own bytes
    listing.write_bytes(b"media/latin1_\xe9t\xe9.wav\n")
    assert list(iter_inputs("", str(listing))) == [(str(media / latin1), os.path.join("media", latin1))]


def test_a_decoders_verdict_is_stored_and_reused(tmp_path):
    media = _media(tmp_path / "media", 2)
    (media / "notes.mp3").write_text("plain text\n" * 50)
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")})
    run_snakemake(tmp_path, config)
    assert created_since(tmp_path / "cache", 0)["decode_verdict"] == 1
    started = time.time()
    run_snakemake(tmp_path, config, "--forcerun", "decode")
    assert created_since(tmp_path / "cache", started) == {}
    profile = json.loads(next((tmp_path / "results" / "bookkeeping" / "timings" / "decode").glob("*.json")).read_text())
    assert (profile["cache_hits"], profile["cache_misses"], profile["failed"]) == (3, 0, 1)  # not decoded again
    manifest = json.loads((tmp_path / "results" / "manifests" / "notes.mp3.json").read_text())
    assert manifest["error"].startswith("decode: not a media file FFmpeg can read")


def test_an_input_the_run_may_not_open_is_its_result_and_is_tried_again_after_chmod(tmp_path):
    """Run as uid nobody (forked from root): a file readable by root only."""
    from audiofeat.inputs.inventory import identify_inputs, input_fingerprint

    media = tmp_path / "media"
    media.mkdir()
    locked = media / "locked.wav"
    shutil.copy(REAL_RECORDINGS[0], locked)
    locked.chmod(0o600)
    os.chmod(tmp_path, 0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, identify, report, exit without pytest's teardown (always)
        try:
            os.setgid(65534)
            os.setuid(65534)
            error = identify_inputs([(str(locked), "locked.wav")], None, 1)[0].error
            os.write(write, error.encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 10000).decode() == "cannot read file: Permission denied"
    before = input_fingerprint(str(media), "")
    time.sleep(0.01)
    locked.chmod(0o644)  # the fix changes the file's ctime: the inventory reruns and hashes it
    assert input_fingerprint(str(media), "") != before
    assert identify_inputs([(str(locked), "locked.wav")], None, 1)[0].error == ""


def test_an_input_the_run_may_not_open_is_its_verdict_then_processed_once_readable(tmp_path):
    """A real run that obeys file permissions (root without its override capabilities, as any user): a file it
    may not read is that file's error and the others go on; once its permissions change, the same command
    processes it."""
    import sys

    from audiofeat.testing.media import make_audio
    from conftest import REPO

    assert shutil.which("setpriv"), "setpriv (util-linux) missing"
    media = tmp_path / "media"
    make_audio(media / "open.wav", seconds=0.5, sr=16000)
    locked = make_audio(media / "locked.flac", seconds=0.5, sr=16000, source="noise")
    os.chown(locked, 65534, 65534)  # nobody's, readable by nobody else
    locked.chmod(0o600)
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results", extractors=["loudness"],
                          cache={"dir": str(tmp_path / "cache")})
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable, "-m", "snakemake",
           "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--profile",
           str(REPO / "profiles" / "local"), "--cores", "2", "--configfile", str(config)]

    def run():
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert done.returncode == 0, done.stderr[-3000:]
        return {Path(m["source"]["path"]).name: m for m in read_manifests(tmp_path / "results")}

    first = run()
    assert first["open.wav"]["status"] == "ok"
    assert first["locked.flac"]["status"] == "error" and "Permission denied" in first["locked.flac"]["error"]
    locked.chmod(0o644)
    second = run()
    assert second["locked.flac"]["status"] == "ok" and "loudness" in second["locked.flac"]
