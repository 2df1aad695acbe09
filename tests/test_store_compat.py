"""A store filled by the code before the extractor interface is reused as it is: same keys, nothing recomputed."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from conftest import created_since, read_jsonl, read_manifests, run_snakemake

FIXTURE = Path(__file__).parent / "fixtures" / "store_before_extractors"


def _comparable(record: dict, root: Path) -> dict:
    """A manifest with the run's folder written ``ROOT`` and the store's location dropped."""
    text = json.dumps(record).replace(str(root), "ROOT")
    record = json.loads(text)
    record.get("audio", {}).pop("wav", None)
    return record


def test_a_store_from_before_the_extractor_interface_is_reused_without_recomputation(tmp_path):
    shutil.copytree(FIXTURE / "media", tmp_path / "media")
    shutil.copytree(FIXTURE / "artifacts", tmp_path / "store" / "artifacts")
    shutil.copy(FIXTURE / "config.yaml", tmp_path / "config.yaml")
    started = time.time()
    run_snakemake(tmp_path, tmp_path / "config.yaml")
    assert created_since(tmp_path / "store", started) == {}
    old = sorted((_comparable(r, tmp_path) for r in read_jsonl(FIXTURE / "manifest.jsonl")),
                 key=lambda r: r["source"]["path"])
    new = sorted((_comparable(r, tmp_path) for r in read_manifests(tmp_path / "results")),
                 key=lambda r: r["source"]["path"])
    assert [r["status"] for r in new] == ["ok", "error", "ok"]
    for before, after in zip(old, new):
        # Fields added since are allowed; every field the old manifest had keeps its value.
        assert {k: after.get(k) for k in before} == before


def _assert_close(after, before, where="features"):
    import numpy as np

    if isinstance(before, dict):
        assert after.keys() == before.keys(), where
        for key in before:
            _assert_close(after[key], before[key], f"{where}.{key}")
    elif isinstance(before, list) and before and isinstance(before[0], float):
        # float32 rounding: statistics of MFCCs in the hundreds (deltas are their differences) move by ~1e-5
        assert np.allclose(after, before, rtol=1e-5, atol=1e-4), where
    else:
        assert after == before, where


def test_a_run_with_every_speedup_off_gives_the_same_manifests(tmp_path):
    """The whole workflow without any hook into other projects' internals, on a fresh store: the same features,
    and embeddings within the parity tolerance, as the stored run made with them on."""
    import numpy as np

    shutil.copytree(FIXTURE / "media", tmp_path / "media")
    shutil.copy(FIXTURE / "config.yaml", tmp_path / "config.yaml")
    run_snakemake(tmp_path, tmp_path / "config.yaml", env={"AUDIOFEAT_SPEEDUPS": "off"})
    old = {r["source"]["path"]: r for r in (_comparable(r, tmp_path) for r in read_jsonl(FIXTURE / "manifest.jsonl"))}
    new = {r["source"]["path"]: r for r in (_comparable(r, tmp_path)
                                            for r in read_manifests(tmp_path / "results"))}
    assert old.keys() == new.keys()
    for path, before in old.items():
        after = new[path]
        assert after["status"] == before["status"] and after.get("error") == before.get("error")
        if before["status"] == "ok":
            assert after["audio"] == before["audio"]
            # Recomputed: FFTW_MEASURE picks its algorithm by timing on each machine, which moves float32's
            # last bit; anything larger is a real difference.
            _assert_close(after["features"], before["features"])
            assert np.abs(np.subtract(after["clap"]["embedding"], before["clap"]["embedding"])).max() <= 1e-5
