"""A shard's assembly redoes only what changed: a real run's tables, assembled into parts of a few rows."""
import csv
import json

import numpy as np
import pyarrow.dataset as ds

from audiofeat import assemble
from audiofeat.extractors import build_extractors
from audiofeat.settings import load_settings
from audiofeat.testing.media import write_tone_clips

from conftest import run_snakemake, write_config


def _assemble(work, shard, paths_tsv, extractors):
    out = work / "again"
    return assemble.assemble_shard(
        str(paths_tsv), {stage: str(work / "results" / stage / f"{shard}.jsonl") for stage in ("ingest", *extractors)},
        extractors, shard=shard, manifests_dir=str(out / "manifests"), dataset_dir=str(out / "dataset"),
        summary_path=str(out / f"{shard}.json"), index_path=str(out / f"{shard}.index.json"))


def _parts(work):
    return {p.name: p.stat().st_mtime_ns for p in (work / "again" / "dataset").glob("*.parquet")}


def test_only_the_part_and_manifest_of_a_removed_or_added_input_are_rewritten(tmp_path, monkeypatch):
    write_tone_clips(tmp_path / "media", 12, seed=3, seconds=0.3)
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path / "media"), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")}, extractors=["features"])
    run_snakemake(tmp_path, config)
    extractors = build_extractors(load_settings(str(config)))
    paths_tsv, = (tmp_path / "results" / "inventory" / "paths").glob("*.tsv")
    shard = paths_tsv.stem
    monkeypatch.setattr(assemble, "PART_ROWS", 4)
    first = _assemble(tmp_path, shard, paths_tsv, extractors)
    assert len(first["parts"]) == 4 and first["manifests_written"] == 12 and first["ok"] == 12
    before = _parts(tmp_path)
    # One input gone from the shard: its manifest and the one part that held it change, nothing else.
    with open(paths_tsv, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    fewer = tmp_path / "fewer.tsv"
    with open(fewer, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[1:])
    second = _assemble(tmp_path, shard, fewer, extractors)
    assert second["manifests_written"] == 0 and second["rows"] == 11
    assert not (tmp_path / "again" / "manifests" / f"{rows[0]['relpath']}.json").exists()
    changed = {name for name, mtime in _parts(tmp_path).items() if before.get(name) != mtime}
    assert len(changed) == 1 and len(_parts(tmp_path)) == 4
    # Back again: one manifest written, the same part rewritten, every row what the workflow's manifests say.
    third = _assemble(tmp_path, shard, paths_tsv, extractors)
    assert third["manifests_written"] == 1 and third["parts"] != second["parts"]
    table = ds.dataset(tmp_path / "again" / "dataset").to_table()
    assert table.num_rows == 12
    for row in table.to_pylist():
        relpath = row["path"].split("/media/", 1)[1]
        manifest = json.loads((tmp_path / "results" / "manifests" / f"{relpath}.json").read_text())
        assert np.array_equal(np.float32(row["features_mel_mean"]), np.float32(manifest["features"]["mel"]["mean"]))
        assert row["content_key"] == manifest["source"]["content_key"]
