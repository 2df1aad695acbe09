"""What a change recomputes, counted in the store: real Snakemake runs over small media."""
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiofeat.clap.windows import Window, active_fraction
from audiofeat.inputs.wav import read_wav
from audiofeat.testing.media import make_audio, write_tone_clips

from conftest import assert_dataset_is_the_manifests, bumped_copy, read_manifests, REPO, created_since, last_used_at, read_jsonl, run_snakemake, write_config


def _write_clips(folder, count, seed=0, seconds=0.4, sr=16000):
    write_tone_clips(folder, count, seed=seed, seconds=seconds, sr=sr)


def _manifests(results):
    return {line["source"]["path"]: line for line in read_manifests(results)}


def _comparable(record, cache_dir):
    """A manifest without what legitimately differs between two runs: timings and the store's location."""
    record = json.loads(json.dumps(record))
    record.pop("timings", None)
    if "audio" in record:
        record["audio"]["wav"] = os.path.relpath(record["audio"]["wav"], cache_dir)
    if "clap" in record:
        record["clap"]["embedding"] = np.round(record["clap"]["embedding"], 4).tolist()
    return record


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Twelve short clips and a 23 s one, run once; each test below changes one thing and counts."""
    work = tmp_path_factory.mktemp("reruns")
    media = work / "media"
    _write_clips(media, 12)
    make_audio(media / "long" / "sweep.flac", seconds=23, sr=44100, source="chirp")
    cache = work / "cache"
    base = dict(input_dir=str(media), results_dir="results", cache={"dir": str(cache)})
    config = write_config(work / "base.yaml", **base)
    run_snakemake(work, config)
    return work, media, cache, base


def _run_and_count(work, store, name, **settings):
    config = write_config(work / f"{name}.yaml", **settings)
    started = time.time()
    done = run_snakemake(work, config)
    return created_since(store, started), done


def test_rerun_of_a_finished_run_recomputes_nothing(small_run):
    work, media, cache, base = small_run
    created, done = _run_and_count(work, cache, "again", **base)
    assert created == {}
    assert "Nothing to be done" in done.stdout + done.stderr


def test_features_parameter_change_recomputes_only_features(small_run):
    work, media, cache, base = small_run
    created, _ = _run_and_count(work, cache, "mfcc13", **base, features={"n_mfcc": 13})
    assert created == {"features": 13}
    assert all(len(m["features"]["mfcc"]["mean"]) == 13 for m in _manifests(work / "results").values())
    created, _ = _run_and_count(work, cache, "mfcc20", **base)  # back: everything is in the store
    assert created == {}


def test_features_version_bump_recomputes_only_features(small_run, tmp_path):
    work, media, cache, base = small_run
    copy = bumped_copy(tmp_path, "features", 'version = "1"  # bump', 'version = "2"  # bump')
    config = write_config(work / "bumped.yaml", **base)
    started = time.time()
    env = {"PYTHONPATH": str(copy)}  # the bumped package, in the jobs as in the Snakefile
    run_snakemake(work, config, snakefile=copy / "Snakefile", env=env)
    assert created_since(cache, started) == {"features": 13}
    versions = {m["extractors"]["features"]["version"] for m in _manifests(work / "results").values()}
    assert versions == {"2"}
    created, _ = _run_and_count(work, cache, "unbumped", **base)  # version 1 artifacts are still there
    assert created == {}


def test_clap_settings_change_recomputes_only_clap(small_run):
    work, media, cache, base = small_run
    created, _ = _run_and_count(work, cache, "robust", **base,
                                segment={"aggregate_mode": "robust", "save_segments": True})
    assert created == {"clap": 13, "clap_segments": 13}
    long = _manifests(work / "results")[str(media / "long" / "sweep.flac")]
    assert long["clap"]["aggregate_strategy"]["mode"] == "robust" and len(long["clap"]["segments"]) == 4
    assert np.load(long["clap"]["segments_artifact"]).shape == (4, 512)
    # Another hop, and the weighted mode, whose weights are each window's active fraction of the decoded audio
    # (only it computes them).
    created, _ = _run_and_count(work, cache, "weighted", **base, segment={"aggregate_mode": "weighted",
                                                                          "hop_seconds": 4})
    assert created == {"clap": 13}
    long = _manifests(work / "results")[str(media / "long" / "sweep.flac")]
    y, sr = read_wav(long["audio"]["wav"])
    windows = [Window(round(s["start_s"] * sr), round(s["end_s"] * sr)) for s in long["clap"]["segments"]]
    expected = [round(active_fraction(y, w, 10 * sr, sr), 6) for w in windows]
    assert long["clap"]["aggregate_strategy"]["weights"] == expected and len(expected) == 5  # 0, 4, 8, 12 and 13 s


def test_checkpoint_change_recomputes_only_clap(small_run):
    from audiofeat.testing.media import write_seeded_checkpoint

    work, media, cache, base = small_run
    checkpoint = write_seeded_checkpoint(work / "630k-other.pt", seed=3)
    created, _ = _run_and_count(work, cache, "ckpt", **{**base, "clap": {"checkpoint": str(checkpoint),
                                                                         "allow_random_weights": False}})
    assert created == {"clap": 13}
    weights = {m["clap"]["weights"] for m in _manifests(work / "results").values() if m["status"] == "ok"}
    assert weights == {f"laion:sha256:{hashlib.sha256(checkpoint.read_bytes()).hexdigest()}"}
    # The report names the weights that made the embeddings: the file and its digest.
    report = (work / "results" / "report" / "index.html").read_text(encoding="utf-8")
    assert f"CLAP weights: 630k-other.pt (sha256 {weights.pop().rsplit(':', 1)[1]})" in report
    assert "random" not in report.split("<h2")[0]


def test_loudness_added_computes_loudness_only_and_a_loudness_run_reports_its_stage(small_run):
    work, media, cache, base = small_run
    created, _ = _run_and_count(work, cache, "plus_loudness", **base, extractors=["features", "clap", "loudness"])
    assert created == {"loudness": 13}
    created, _ = _run_and_count(work, cache, "loudness_only", **base, extractors=["loudness"])
    assert created == {}
    results = work / "results"
    assert all(set(m) >= {"loudness"} and "clap" not in m for m in _manifests(results).values()
               if m["status"] == "ok")
    rows = (results / "report" / "timings.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows[1:]] == ["decode", "loudness"]
    report = (results / "report" / "index.html").read_text(encoding="utf-8")
    chart = report.split("<h2>Time per stage</h2>")[1].split("<h2")[0]
    assert ">loudness<" in chart and ">decode<" in chart and "CLAP weights" not in report


def test_target_rate_change_recomputes_everything_after_decoding(small_run):
    work, media, cache, base = small_run
    created, _ = _run_and_count(work, cache, "sr32k", **base, audio={"target_sr": 32000})
    assert created == {"wav": 13, "features": 13, "clap": 13}
    assert {m["audio"]["target_sr"] for m in _manifests(work / "results").values()} == {32000}


def test_moved_input_folder_recomputes_nothing(small_run):
    work, media, cache, base = small_run
    moved = work / "media-moved"
    media.rename(moved)
    try:
        created, _ = _run_and_count(work, cache, "moved", **{**base, "input_dir": str(moved)})
        assert created == {}
        paths = set(_manifests(work / "results"))
        assert paths == {str(p) for p in moved.rglob("*") if p.is_file()}
        assert (work / "results" / "manifests" / "long" / "sweep.flac.json").exists()
    finally:
        moved.rename(media)


def test_corrupt_artifact_is_recomputed_not_fatal(small_run):
    work, media, cache, base = small_run
    config = write_config(work / "force.yaml", **base)
    run_snakemake(work, config)
    before = read_manifests(work / "results")
    # Truncated artifacts of this run (its shard tables name them), as after a disk error.
    victims = [Path(next(r["artifact"] for t in sorted((work / "results" / "bookkeeping" / stage).glob("*.jsonl"))
                         for r in read_jsonl(t) if r["status"] == "ok")) for stage in ("features", "clap")]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:40])
    # A plain rerun reads nothing (its outputs are complete and were made from intact artifacts): they stay.
    done = run_snakemake(work, config)
    assert "Nothing to be done" in done.stdout + done.stderr
    assert read_manifests(work / "results") == before
    # A job that reads them finds the damage on its verified read and recomputes them.
    started = time.time()
    run_snakemake(work, config, "--forcerun", "extract_features", "extract_clap")
    assert created_since(cache, started) == {"features": 1, "clap": 1}
    assert all(m["status"] == "ok" for m in _manifests(work / "results").values())


def test_a_features_artifact_damaged_under_a_finished_shard_is_found_when_the_shard_is_reassembled(tmp_path):
    """A shard's assembly inserts features artifacts unparsed: a damaged one is a fault that names the rerun,
    never broken JSON in a manifest, and the same command recomputes it. A finished shard is not reassembled when
    another shard changes, nor are unchanged manifests rebuilt (they were made from intact artifacts), so the
    damage waits for a job that reads it."""
    from audiofeat.inputs.inventory import shard_of
    from audiofeat.store.artifacts import blake2b_file

    media = tmp_path / "media"
    _write_clips(media, 7, seed=6)
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="out", cache={"dir": str(cache)},
                          shard={"target_files": 4})  # two shards, before and after adding the eighth file
    run_snakemake(tmp_path, config)
    _write_clips(media / "new", 1, seed=7)
    new_shard = shard_of(blake2b_file(next((media / "new").iterdir())), 2)
    victim = next(p for p in (cache / "artifacts" / "features").rglob("*.json")
                  if shard_of(p.name.split(".")[0], 2) != new_shard)  # a shard whose jobs do not rerun
    victim.write_bytes(victim.read_bytes()[:100])
    run_snakemake(tmp_path, config)  # the eighth file's shard only
    assert len(read_manifests(tmp_path / "out")) == 8
    for index in (tmp_path / "out" / "bookkeeping" / "assembled").glob("n2-*.index.json"):
        index.unlink()  # without its index, a shard's assembly builds every manifest again
    failed = run_snakemake(tmp_path, config, "--forcerun", "assemble_shard", check=False)
    assert failed.returncode != 0
    assert f"audiofeat: features artifact {victim} is gone from the store or damaged" in failed.stderr
    assert "rerun the same command" in failed.stderr
    started = time.time()
    run_snakemake(tmp_path, config)
    assert created_since(cache, started) == {"features": 1}
    manifests = read_manifests(tmp_path / "out")
    assert len(manifests) == 8 and all(m["status"] == "ok" for m in manifests)


def test_new_shard_targets_replan_computing_nothing_and_leave_no_retired_shard(tmp_path):
    """Changing the shard targets (as upgrading to new defaults does) re-plans every shard: each job reruns
    from the store, nothing is computed, the results equal the old ones, and the bookkeeping holds the same
    files as a clean run's under the new plan (no table, log or profile of a retired shard stays)."""
    media = tmp_path / "media"
    _write_clips(media, 6, seed=8)
    cache = tmp_path / "cache"
    settings = dict(input_dir=str(media), cache={"dir": str(cache)})
    run_snakemake(tmp_path, write_config(tmp_path / "old.yaml", results_dir="out", shard={"target_files": 2}, **settings))
    kept = tmp_path / "out" / "bookkeeping"
    old_shards = {p.name.partition(".")[0] for p in (kept / "decode").iterdir()}
    assert len(old_shards) >= 2 and all(shard.startswith("n4-") for shard in old_shards)
    before = {path: _comparable(m, cache) for path, m in _manifests(tmp_path / "out").items()}
    started = time.time()
    run_snakemake(tmp_path, write_config(tmp_path / "new.yaml", results_dir="out", **settings))
    assert created_since(cache, started) == {}
    assert {path: _comparable(m, cache) for path, m in _manifests(tmp_path / "out").items()} == before
    run_snakemake(tmp_path, write_config(tmp_path / "clean.yaml", results_dir="clean", **settings))

    def files(results):
        return sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())

    assert files(kept) == files(tmp_path / "clean" / "bookkeeping")
    assert files(tmp_path / "out" / "dataset") == ["n1-000-0000.parquet"]


def test_cache_disabled_reads_and_writes_nothing_in_the_store(tmp_path):
    from audiofeat.inputs.wav import wav_bytes
    from audiofeat.extractors import DecodeExtractor
    from audiofeat.config.settings import Settings
    from audiofeat.store.artifacts import ArtifactStore, blake2b_file

    media = tmp_path / "media"
    _write_clips(media, 3, seed=5)
    cache = tmp_path / "cache"
    # A poisoned WAV under the first clip's very key: a run that read the store would report its 7 s.
    first = sorted(media.rglob("*.wav"))[0]
    ArtifactStore(cache).put(DecodeExtractor.from_settings(Settings()).key(blake2b_file(first)), wav_bytes(np.zeros(7 * 48000, np.float32), 48000),
                             {"probe": {"duration_s": 7.0, "sample_rate": 48000, "channels": 1, "codec": "x",
                                        "container": "x"}, "samples": 7 * 48000, "seconds": 0.0})
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()}
    config = write_config(tmp_path / "off.yaml", input_dir=str(media), results_dir="out",
                          cache={"dir": str(cache)})
    run_snakemake(tmp_path, config, env={"CACHE_ENABLED": "false"})
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()} == before
    manifests = _manifests(tmp_path / "out")
    assert all(m["status"] == "ok" for m in manifests.values())
    assert manifests[str(first)]["audio"]["duration_s"] == pytest.approx(0.4, abs=0.01)
    assert all((tmp_path / m["audio"]["wav"]).resolve().is_relative_to(tmp_path / "out" / "bookkeeping" / "work")
               for m in manifests.values())


def test_one_file_added_to_a_finished_four_shard_run(tmp_path):
    media = tmp_path / "media"
    _write_clips(media, 36, seed=1, seconds=0.2)
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="out", cache={"dir": str(cache)},
                          shard={"target_files": 10})
    run_snakemake(tmp_path, config)
    timings = tmp_path / "out" / "bookkeeping" / "timings"
    cold_threads = {json.loads(p.read_text())["threads"] for p in timings.rglob("*.json")}
    manifests = tmp_path / "out" / "manifests"
    before = {p: p.read_bytes() for p in manifests.rglob("*.json")}
    parts = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "out" / "dataset").glob("*.parquet")}
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    _write_clips(media / "new", 1, seed=2, seconds=0.2)
    started = time.time()
    done = run_snakemake(tmp_path, config)
    assert created_since(cache, started) == {"wav": 1, "features": 1, "clap": 1}
    assert len(read_manifests(tmp_path / "out")) == 37
    # Four shards: only the new file's shard reran its three jobs.
    assert (done.stdout + done.stderr).count("rule decode:") == 1
    # Each claimed every core when all its files were new, and one thread for its one new file now, so that
    # the shard's features and CLAP jobs could run side by side.
    rerun = [json.loads(p.read_text()) for p in timings.rglob("*.json") if p.stat().st_mtime >= started]
    assert cold_threads == {2} and sorted(p["stage"] for p in rerun) == ["clap", "decode", "features"]
    assert all(p["threads"] == 1 and p["cache_misses"] == 1 for p in rerun)
    # The other 36 manifests were not rewritten: a cache hit keeps the timings of the run that computed it.
    written = sorted(p.relative_to(manifests).as_posix() for p in manifests.rglob("*.json")
                     if p.stat().st_mtime >= started)
    assert written == ["new/clip_2_00000.wav.json"]
    assert all(p.read_bytes() == data for p, data in before.items())
    # One Parquet part rewritten (the new file's shard), the others untouched; the matrix follows the dataset.
    assert (done.stdout + done.stderr).count("rule assemble_shard:") == 1
    changed = [p.name for p, (data, mtime) in parts.items() if p.stat().st_mtime_ns != mtime]
    assert len(changed) == 1 and all(p.read_bytes() == data for p, (data, _) in parts.items() if p.name not in changed)
    assert_dataset_is_the_manifests(tmp_path / "out")
    now = np.load(tmp_path / "out" / "embeddings.npy")
    assert now.shape == (37, 512) and {row.tobytes() for row in embeddings} < {row.tobytes() for row in now}
    _assert_cached_clap_job_loads_no_model(tmp_path, config)


def _assert_cached_clap_job_loads_no_model(work, config):
    """A CLAP job whose every embedding is in the store imports no torch and builds no model."""
    import subprocess
    import sys

    probe = ("import sys, glob; from audiofeat.extractors.runner import run_extractor; from audiofeat.config.settings import load_settings; from audiofeat.extractors import section_schemas;"
             f"s = load_settings('{config}', sections=section_schemas()); tables = glob.glob('{work}/out/bookkeeping/decode/*.jsonl');"
             f"[run_extractor('clap', t, '{work}/probe.jsonl', '{work}/probe.json', s) for t in tables];"
             "print(len(tables) > 0, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True False"
    assert all(r["status"] == "ok" and r["cache_hit"] for r in read_jsonl(work / "probe.jsonl"))


def test_sigkill_at_a_random_point_then_rerun_equals_a_clean_run(tmp_path):
    media = tmp_path / "media"
    _write_clips(media, 6, seed=4, seconds=0.3)
    make_audio(media / "long.m4a", seconds=20, sr=22050, source="noise")
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    for d in (clean_dir, killed_dir):
        d.mkdir()
    settings = dict(input_dir=str(media), results_dir="out", shard={"target_files": 4})  # two shards
    clean_cfg = write_config(clean_dir / "c.yaml", **settings, cache={"dir": str(clean_dir / "cache")})
    killed_cfg = write_config(killed_dir / "c.yaml", **settings, cache={"dir": str(killed_dir / "cache")})
    run_snakemake(clean_dir, clean_cfg)
    total = sum(created_since(clean_dir / "cache", 0).values())

    # The kill point is a random amount of finished work plus a random part of a second, not a random time: the
    # run's pace depends on the machine's load, and a time-based kill can land before the first job ends.
    rng = random.Random(os.environ.get("AUDIOFEAT_KILL_SEED", "0"))
    kill_after, extra_delay = rng.randint(1, total // 2), rng.uniform(0.0, 0.3)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(killed_dir),
           "--profile", str(REPO / "profiles" / "local"), "--cores", "2", "--configfile", str(killed_cfg)]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=killed_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while proc.poll() is None and sum(created_since(killed_dir / "cache", 0).values()) < kill_after:
        time.sleep(0.05)
    time.sleep(extra_delay)
    assert proc.poll() is None, "the run ended before the kill point"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed_dir / "out" / "summary.json").exists()
    finished_before = sum(created_since(killed_dir / "cache", 0).values())
    assert finished_before > 0, "the kill came before any artifact was written"
    run_snakemake(killed_dir, killed_cfg, "--unlock")
    resumed = time.time()
    run_snakemake(killed_dir, killed_cfg)
    assert finished_before < total, "the kill came after every artifact was written"
    assert sum(created_since(killed_dir / "cache", resumed).values()) == total - finished_before  # the rest only

    clean = _manifests(clean_dir / "out")
    killed = _manifests(killed_dir / "out")
    assert clean.keys() == killed.keys()
    for path in clean:
        assert _comparable(killed[path], killed_dir / "cache") == _comparable(clean[path], clean_dir / "cache"), path
    assert np.abs(np.load(clean_dir / "out" / "embeddings.npy") - np.load(killed_dir / "out" / "embeddings.npy")).max() \
        <= 1e-5


def test_cache_console_script_stats_verify_and_gc(small_run):
    work, media, cache, base = small_run
    stats = subprocess.run([sys.executable, "-m", "audiofeat.cli", "cache", "stats", "--dir", str(cache), "--json"],
                           capture_output=True, text=True, check=True)
    data = json.loads(stats.stdout)
    assert data["extractors"]["wav"]["files"] >= 13 and data["total_bytes"] > 0
    verify = subprocess.run([sys.executable, "-m", "audiofeat.cli", "cache", "verify", "--dir", str(cache)],
                            capture_output=True, text=True, check=True)
    assert f"{data['total_files']} artifacts rehashed, 0 damaged" in verify.stdout
    gc = subprocess.run([sys.executable, "-m", "audiofeat.cli", "cache", "gc", "--dir", str(cache), "--max-gb",
                         "0.000001", "--grace-hours", "0"], capture_output=True, text=True, check=True)
    assert "removed" in gc.stdout
    assert json.loads(subprocess.run([sys.executable, "-m", "audiofeat.cli", "cache", "stats", "--dir", str(cache),
                                      "--json"], capture_output=True, text=True, check=True).stdout)[
        "total_bytes"] <= 1000


def test_run_ends_with_gc_that_spares_what_the_run_uses(tmp_path):
    media = tmp_path / "media"
    _write_clips(media, 4, seed=9)
    cache = tmp_path / "cache"
    base = dict(input_dir=str(media), results_dir="out", cache={"dir": str(cache)})
    run_snakemake(tmp_path, write_config(tmp_path / "a.yaml", **base, features={"n_mfcc": 13}))
    everything = [p for p in (cache / "artifacts").rglob("*") if p.is_file()]
    assert len(everything) == 3 * 4  # one file per artifact: WAV, features and CLAP of each of the 4 inputs
    for path in everything:  # all of the first run's artifacts were last used two hours ago
        last_used_at(path, time.time() - 7200)
    stale = list((cache / "artifacts" / "features").rglob("*.json"))
    run_snakemake(tmp_path, write_config(tmp_path / "b.yaml", **{**base, "cache": {"dir": str(cache),
                                                                                     "ttl_hours": 1}}))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cache_gc"]["removed_files"] == len(stale) == 4  # the n_mfcc=13 features, no longer used
    assert not any(p.exists() for p in stale)
    # Just as old, but this run's WAVs and embeddings (its jobs did not rerun): kept.
    assert all(p.exists() for p in everything if p not in stale)


def test_cached_clap_blocks_come_from_the_previous_table_while_the_artifact_is_unchanged(tmp_path, monkeypatch):
    from audiofeat.config.schema import validate_config
    from audiofeat.extractors import build_extractors, section_schemas
    from audiofeat.inputs.inventory import write_tsv
    from audiofeat.extractors.runner import open_store, run_extractor, run_decode
    from audiofeat.config.settings import Settings
    from audiofeat.store.artifacts import blake2b_file

    clips = write_tone_clips(tmp_path / "media", 3, seed=21)
    config = Settings.from_config(validate_config({
        "input_dir": str(tmp_path / "media"), "cache": {"dir": str(tmp_path / "cache")}, "perf": {"device": "cpu"},
        "segment": {"save_segments": True}, "clap": {"checkpoint": "", "allow_random_weights": True}},
        sections=section_schemas()))
    shard = tmp_path / "shard.tsv"
    write_tsv(shard, ("content_key", "path"), [{"content_key": blake2b_file(p), "path": str(p)} for p in clips])
    ingest = tmp_path / "ingest.jsonl"
    run_decode(shard, ingest, tmp_path / "ingest.json", config)
    previous = tmp_path / "previous" / "clap.jsonl"

    def clap_run(name):
        out = tmp_path / f"{name}.jsonl"
        run_extractor("clap", ingest, out, tmp_path / f"{name}.json", config, previous_jsonl=str(previous))
        return {r["content_key"]: r for r in read_jsonl(out)}

    first = clap_run("first")  # computes, and keeps its table as the next run's previous one
    assert previous.read_bytes() == (tmp_path / "first.jsonl").read_bytes()
    opened = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda path, *a, **k: opened.append(str(path)) or real_load(path, *a, **k))
    (tmp_path / "first.jsonl").unlink()  # as Snakemake deletes a job's output before rerunning it
    second = clap_run("second")
    assert all(r["cache_hit"] for r in second.values()) and not any(r["cache_hit"] for r in first.values())
    assert _unhit(second) == _unhit(first) and opened == []  # every block from the previous table, no .npz opened

    # Another run sharing the store replaced one artifact (recomputed after a gc, say): its block is read anew.
    ck = next(iter(first))
    key = build_extractors(config, job=True)["clap"].key(ck)
    with real_load(first[ck]["artifact"]) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["embedding"] = -arrays["embedding"]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    open_store(config).put(key, buffer.getvalue(), {"seconds": 0.0})
    third = clap_run("third")
    assert opened == [first[ck]["artifact"]]
    assert third[ck]["block"]["embedding"] == (-np.asarray(first[ck]["block"]["embedding"])).tolist()
    assert all(_unhit(third)[k] == _unhit(first)[k] for k in first if k != ck)

    previous.write_text("{not json")  # a damaged previous table is only a missed shortcut
    assert clap_run("fourth") == third and len(opened) == 1 + len(first)


def _unhit(records: dict) -> dict:
    return {k: {f: v for f, v in r.items() if f != "cache_hit"} for k, r in records.items()}


def test_a_wav_removed_from_the_store_between_runs_is_decoded_again_by_the_same_command(tmp_path):
    """A gc of a shared store between two runs removes a WAV the finished shard's decode table names; a later
    change that reruns CLAP finds it gone: one line, the decode table removed, and the same command completes."""
    media = tmp_path / "media"
    _write_clips(media, 3, seed=8)
    cache = tmp_path / "cache"
    base = dict(input_dir=str(media), results_dir="out", cache={"dir": str(cache)})
    run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", **base))
    wav = next(p for p in (cache / "artifacts" / "wav").rglob("*.wav"))
    wav.unlink()
    changed = write_config(tmp_path / "robust.yaml", **base, segment={"aggregate_mode": "robust"})
    failed = run_snakemake(tmp_path, changed, check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert f"audiofeat: wav artifact {wav} is gone from the store or damaged" in failed.stderr
    assert "decode table was removed: rerun the same command" in failed.stderr
    started = time.time()
    run_snakemake(tmp_path, changed)
    assert created_since(cache, started) == {"wav": 1, "clap": 3}
    assert [m["clap"]["aggregate_strategy"]["mode"] for m in read_manifests(tmp_path / "out")] == ["robust"] * 3


def _as_old_layout(results: Path) -> None:
    """The folder as runs before the bookkeeping folder left it: every bookkeeping entry at the top, the decode
    stage's folders and profiles named "ingest", the matrix's index beside it (the issue lists those entries)."""
    kept = results / "bookkeeping"
    for folder, old in (("logs/decode", "logs/ingest_decode"), ("benchmarks/decode", "benchmarks/ingest_decode"),
                        ("progress/decode", "progress/ingest"), ("timings/decode", "timings/ingest"),
                        ("decode", "ingest"), ("embeddings.index.json", "embeddings.npy.index.json")):
        os.rename(kept / folder, kept / old)
    for profile in (kept / "timings" / "ingest").glob("*.json"):
        st = profile.stat()
        profile.write_text(json.dumps({**json.loads(profile.read_text()), "stage": "ingest"}))
        os.utime(profile, ns=(st.st_atime_ns, st.st_mtime_ns))
    for entry in kept.iterdir():
        os.rename(entry, results / entry.name)
    kept.rmdir()


def test_a_results_folder_of_the_old_layout_is_moved_and_nothing_recomputed(tmp_path):
    media = tmp_path / "media"
    _write_clips(media, 5, seed=7)
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")}, shard={"target_files": 3})
    run_snakemake(tmp_path, config)
    results = tmp_path / "results"
    _as_old_layout(results)
    shutil.rmtree(tmp_path / ".snakemake" / "metadata")  # what the old run recorded was under the old paths
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (results / "manifests").rglob("*.json")}
    assert {p.name for p in results.iterdir()} >= {"ingest", "inventory", "timings", "features", "clap", "logs"}
    started = time.time()
    done = run_snakemake(tmp_path, config)
    assert created_since(tmp_path / "cache", started) == {}
    assert "audiofeat: moved assembled, benchmarks, ingest, inventory" in done.stderr
    assert {p.name for p in results.iterdir()} == {"manifests", "dataset", "embeddings.npy", "summary.json",
                                                   "manifest.schema.json", "report", "bookkeeping"}
    kept = results / "bookkeeping"
    for folder in ("logs", "benchmarks", "progress", "timings"):  # the decode stage's folders under its name
        assert list((kept / folder / "decode").iterdir()) and not (kept / folder / "ingest").exists(), folder
        assert not (kept / folder / "ingest_decode").exists(), folder
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (results / "manifests").rglob("*.json")} == before
    rows = (results / "report" / "timings.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows[1:]] == ["decode", "features", "clap"]
    again = run_snakemake(tmp_path, config)  # and the moved folder is a finished run
    assert "Nothing to be done" in again.stdout + again.stderr


def test_environment_overrides_the_config_file_and_the_command_line_both_and_a_run_bounds_its_store(tmp_path):
    """CACHE_DIR (environment) beats the file's cache.dir; --config perf.threads beats PERF_THREADS; and the run's
    finalize bounds the store to cache.max_gb, removing another run's artifacts, never its own."""
    cache = tmp_path / "shared-cache"
    _write_clips(tmp_path / "a", 3, seed=1)
    _write_clips(tmp_path / "b", 3, seed=2)
    first = write_config(tmp_path / "a.yaml", input_dir=str(tmp_path / "a"), results_dir="ra",
                         extractors=["loudness"], cache={"dir": str(cache)})
    run_snakemake(tmp_path, first)
    of_a = {p for p in (cache / "artifacts").rglob("*") if p.is_file()}
    second = write_config(tmp_path / "b.yaml", input_dir=str(tmp_path / "b"), results_dir="rb",
                          extractors=["loudness"], cache={"dir": str(tmp_path / "not-this-one")}, perf={"threads": 0})
    run_snakemake(tmp_path, second, "--config", "perf={threads: 2}", "cache={max_gb: 1e-9, gc_grace_hours: 0}",
                  env={"CACHE_DIR": str(cache), "PERF_THREADS": "1"})
    assert not (tmp_path / "not-this-one").exists()
    left = {p for p in (cache / "artifacts").rglob("*") if p.is_file()}
    assert of_a and not (left & of_a)  # the bound removed the other run's artifacts...
    manifests = _manifests(tmp_path / "rb")
    assert len(manifests) == 3 and all(Path(m["audio"]["wav"]) in left for m in manifests.values())  # ...not its own
    summary = json.loads((tmp_path / "rb" / "summary.json").read_text())
    assert summary["cache_gc"]["removed_files"] == len(of_a)
    profiles = [json.loads(p.read_text()) for p in (tmp_path / "rb" / "bookkeeping" / "timings").rglob("*.json")]
    assert {p["threads"] for p in profiles} == {2}  # 3 files each: 2 threads claimed, not PERF_THREADS' 1


def test_a_gc_loop_from_another_project_beside_a_run_never_breaks_it(tmp_path):
    """`audiofeat cache gc --max-gb` on the shared store, over and over while a run goes: the default grace
    period spares what the run uses, so it completes, and equals a run on a store of its own."""
    import threading

    media = tmp_path / "media"
    _write_clips(media, 6, seed=12)
    make_audio(media / "long.flac", seconds=25, sr=22050, source="chirp")
    shared, own = tmp_path / "shared", tmp_path / "own"
    stop, rounds = threading.Event(), []

    def gc_loop():
        while not stop.is_set():
            subprocess.run([sys.executable, "-m", "audiofeat.cli", "cache", "gc", "--dir", str(shared), "--max-gb",
                            "0.000000001"], capture_output=True, check=True)
            rounds.append(1)

    loop = threading.Thread(target=gc_loop)
    loop.start()
    try:
        run_snakemake(tmp_path, write_config(tmp_path / "s.yaml", input_dir=str(media), results_dir="with-gc",
                                             cache={"dir": str(shared)}))
    finally:
        stop.set()
        loop.join()
    assert len(rounds) >= 3  # the gc ran all along the run
    run_snakemake(tmp_path, write_config(tmp_path / "o.yaml", input_dir=str(media), results_dir="alone",
                                         cache={"dir": str(own)}))
    with_gc, alone = _manifests(tmp_path / "with-gc"), _manifests(tmp_path / "alone")
    assert with_gc.keys() == alone.keys()
    for path in alone:
        assert _comparable(with_gc[path], shared) == _comparable(alone[path], own), path


def test_manifests_none_leaves_no_file_per_input_and_the_dataset_holds_every_manifest(tmp_path):
    """outputs.manifests: none writes no manifest files (switching a finished results folder over removes them,
    recomputing nothing), and every manifest, failed inputs' too, comes back from the dataset alone, equal to the
    files a `files` run writes: as `audiofeat manifest` prints them."""
    media = tmp_path / "media"
    _write_clips(media, 5, seed=12)
    (media / "not-media.wav").write_bytes(b"not audio at all")
    cache = tmp_path / "cache"
    base = dict(input_dir=str(media), cache={"dir": str(cache)}, extractors=["features", "loudness", "clap"],
                shard={"target_files": 2})
    run_snakemake(tmp_path, write_config(tmp_path / "files.yaml", **base, results_dir="files"))
    with_files = read_manifests(tmp_path / "files")
    assert len(with_files) == 6 and sum(m["status"] == "error" for m in with_files) == 1
    started = time.time()
    done = run_snakemake(tmp_path, write_config(tmp_path / "none.yaml", **base, results_dir="files",
                                                outputs={"manifests": "none"}))
    assert "5 ok, 1 failed; manifests in files/dataset;" in done.stdout + done.stderr
    assert created_since(cache, started) == {}
    assert not [p for p in (tmp_path / "files" / "manifests").rglob("*") if p.is_file()]
    printed = subprocess.run([sys.executable, "-m", "audiofeat.cli", "manifest", str(tmp_path / "files")],
                             capture_output=True, text=True, check=True).stdout
    assert [json.loads(line) for line in printed.splitlines()] == with_files
    one = with_files[0]["source"]["path"]
    printed = subprocess.run([sys.executable, "-m", "audiofeat.cli", "manifest", str(tmp_path / "files"), one],
                             capture_output=True, text=True, check=True).stdout
    assert [json.loads(line) for line in printed.splitlines()] == with_files[:1]
    summary = json.loads((tmp_path / "files" / "summary.json").read_text())
    assert summary["failures"][0]["files"] == [{"path": str(media / "not-media.wav")}]  # no manifest to link to
