"""Shared fixtures: media made with ffmpeg, the machine's real recordings, and a real Snakemake runner."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from audiofeat.store.trailer import read_trailer
from audiofeat.testing.media import spoken_sentence

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REAL_RECORDINGS = sorted(Path("/usr/share/sounds/alsa").glob("*.wav")) + sorted(
    Path("/usr/share/sounds/freedesktop/stereo").glob("*.oga"))


@pytest.fixture(scope="session")
def real_recordings() -> list[Path]:
    """Speech and sound files shipped by Debian (installed by `make test-deps`)."""
    if len(REAL_RECORDINGS) < 3:
        raise RuntimeError("real recordings missing: run `make test-deps` (alsa-utils, sound-theme-freedesktop)")
    return REAL_RECORDINGS


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory) -> Path:
    """A real synthesised sentence (espeak-ng), 22.05 kHz mono."""
    out = spoken_sentence(tmp_path_factory.mktemp("speech") / "sentence.wav")
    if out is None:
        raise RuntimeError("espeak-ng missing: run `make test-deps`")
    return out


def write_config(path: Path, **overrides) -> Path:
    """A config file for a test run: demo settings plus ``overrides`` (nested dicts merge)."""
    config = {"clap": {"checkpoint": "", "allow_random_weights": True}, "perf": {"threads": 2},
              "shard": {"target_files": 64}}

    def merge(base, extra):
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(config, overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def run_snakemake(workdir: Path, configfile: Path, *extra: str, env: dict | None = None, check: bool = True,
                  timeout: float = 600, snakefile: Path = REPO / "Snakefile",
                  profile: str = "local") -> subprocess.CompletedProcess:
    """Real `snakemake` on the repository's workflow, in its own working directory (its own .snakemake)."""
    cores = ["--cores", "2"] if profile == "local" else []  # with --cores, Snakemake caps a SLURM job's threads too
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           "--profile", str(REPO / "profiles" / profile), *cores, "--configfile", str(configfile), *extra]
    run_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})}
    from audiofeat._speedups import SWITCH
    from audiofeat.config.schema import ENV_OVERRIDES

    for name in (*ENV_OVERRIDES, SWITCH):
        if name not in (env or {}):
            run_env.pop(name, None)  # the caller's shell must not change what a test runs
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=run_env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    return done


def bumped_copy(tmp_path: Path, extractor: str, old: str, new: str) -> Path:
    """A copy of the workflow and package whose ``audiofeat/extractors/<extractor>.py`` says ``new`` for
    ``old`` (a version bump); run it with ``snakefile=copy / "Snakefile"`` and ``PYTHONPATH`` set to it."""
    copy = tmp_path / "audiofeat-bumped"
    copy.mkdir()
    for part in ("Snakefile", "workflow", "audiofeat", "config", "profiles", "environment.yaml"):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / part, copy / part)
    module = copy / "audiofeat" / "extractors" / f"{extractor}.py"
    bumped = module.read_text().replace(old, new)
    assert bumped != module.read_text()
    module.write_text(bumped)
    return copy


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def created_since(cache_dir: Path, since: float) -> dict[str, int]:
    """Artifacts written to the store after ``since`` (a ``time.time()``), per extractor: what a run computed."""
    counts: dict[str, int] = {}
    for path in Path(cache_dir, "artifacts").rglob("*"):
        if path.is_file() and not path.name.endswith(".tmp"):
            with open(path, "rb") as handle:
                trailer = read_trailer(handle, path.stat().st_size)  # None: a sidecar era's file, or its sidecar
            if trailer is not None and trailer.record["created"] >= since:
                extractor = trailer.record["key"]["extractor"]
                counts[extractor] = counts.get(extractor, 0) + 1
    return counts


def last_used_at(artifact: Path, when: float) -> None:
    """Set a stored artifact's LRU clock (its atime; its mtime, the seal, kept) to ``when`` (a ``time.time()``)."""
    os.utime(artifact, ns=(int(when * 1e9), artifact.stat().st_mtime_ns))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def read_manifests(results: Path) -> list[dict]:
    """Every per-file manifest of a results folder, in the dataset's row order (that of ``embeddings.npy``);
    the dataset's rows and the manifests are the same inputs."""
    import pyarrow.dataset as ds

    by_path = {}
    for path in (Path(results) / "manifests").rglob("*.json"):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        by_path[manifest["source"]["path"]] = manifest
    order = ds.dataset(Path(results) / "dataset").to_table(columns=["path"]).column("path").to_pylist()
    assert sorted(order) == sorted(by_path), "the dataset's rows and the manifests differ"
    return [by_path[path] for path in order]


def assert_dataset_is_the_manifests(results: Path) -> None:
    """The Parquet dataset, read by pyarrow and by pandas, holds each manifest's values, typed, in the order of
    ``embeddings.npy``'s rows."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from audiofeat.outputs.dataset import dataset_manifests

    manifests = read_manifests(results)
    assert list(dataset_manifests(results / "dataset")) == manifests  # every field of every manifest
    table = ds.dataset(results / "dataset").to_table()
    assert table.num_rows == len(manifests)
    assert table.schema.field("clap_embedding").type == pa.list_(pa.float32())
    assert table.schema.field("features_mel_median").type == pa.list_(pa.float64())
    assert table.schema.field("duration_s").type == pa.float64() and table.schema.field("size_bytes").type == pa.int64()
    frame = pd.read_parquet(results / "dataset")
    matrix = np.load(results / "embeddings.npy")
    for i, manifest in enumerate(manifests):
        row = frame.iloc[i]
        assert (row["path"], row["status"], row["content_key"]) == (
            manifest["source"]["path"], manifest["status"], manifest["source"]["content_key"])
        if manifest["status"] != "ok":
            assert row["clap_embedding"] is None and not matrix[i].any()
            continue
        assert row["duration_s"] == manifest["audio"]["duration_s"]
        assert np.array_equal(row["clap_embedding"], np.float32(manifest["clap"]["embedding"]))
        assert np.array_equal(matrix[i], np.float32(manifest["clap"]["embedding"]))
        assert np.array_equal(row["features_mfcc_delta_std"], manifest["features"]["mfcc"]["delta_std"])
        assert row["features_n_frames"] == manifest["features"]["n_frames"]
