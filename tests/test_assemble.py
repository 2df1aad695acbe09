"""A shard's assembly redoes only what changed: a real run's tables, assembled into parts of a few rows."""
import csv
import json

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from audiofeat.outputs import partition
from audiofeat.outputs import shard as assemble
from audiofeat.extractors import build_extractors, section_schemas
from audiofeat.config.settings import load_settings
from audiofeat.testing.media import write_tone_clips

from conftest import run_snakemake, write_config


def _assemble(work, shard, paths_tsv, extractors):
    out = work / "again"
    return assemble.assemble_shard(
        {shard: str(paths_tsv)}, {stage: str(work / "results" / "bookkeeping" / stage / f"{shard}.jsonl") for stage in ("decode", *extractors)},
        extractors, shard=shard, manifests_dir=str(out / "manifests"), dataset_dir=str(out / "dataset"),
        summary_path=str(out / f"{shard}.json"), index_dir=str(out))


def _parts(work):
    return {p.name: p.stat().st_mtime_ns for p in (work / "again" / "dataset").glob("*.parquet")}


def test_only_the_part_and_manifest_of_a_removed_or_added_input_are_rewritten(tmp_path, monkeypatch):
    write_tone_clips(tmp_path / "media", 12, seed=3, seconds=0.3)
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path / "media"), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")}, extractors=["features"])
    run_snakemake(tmp_path, config)
    extractors = build_extractors(load_settings(str(config), sections=section_schemas()))
    paths_tsv, = (tmp_path / "results" / "bookkeeping" / "inventory" / "paths").glob("*.tsv")
    shard = paths_tsv.stem
    monkeypatch.setattr(partition, "PART_ROWS", 4)
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


def _write_part(path, rows, dim, rng, failed=()):
    """A part with a ``clap_embedding`` column of ``rows`` random rows, null at ``failed``; returns the matrix
    the part stands for (zero rows where failed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = rng.standard_normal((rows, dim)).astype(np.float32)
    values[list(failed)] = 0.0
    column = pa.array([None if i in failed else values[i] for i in range(rows)], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"clap_embedding": column}), path)
    return values


def test_the_matrix_is_patched_part_by_part_to_the_parts_rows(tmp_path, rng):
    from audiofeat.outputs.dataset import PartRows, patch_embeddings

    dim, npy = 8, tmp_path / "embeddings.npy"
    rows = {"a-0": 5, "b-0": 3, "c-0": 4}
    expected = {name: _write_part(tmp_path / f"{name}.parquet", n, dim, rng, failed=(1,) if name == "b-0" else ())
                for name, n in rows.items()}

    def patch(names, digests):
        parts = [PartRows(name, rows[name], digests[name]) for name in names]
        return patch_embeddings(npy, parts, lambda name: tmp_path / f"{name}.parquet", column="clap_embedding", dim=dim,
                                index_path=f"{npy}.index.json")

    digests = {name: f"d-{name}" for name in rows}
    assert patch(["a-0", "b-0", "c-0"], digests) == 3
    assert np.array_equal(np.load(npy), np.concatenate([expected[n] for n in ("a-0", "b-0", "c-0")]))
    assert patch(["a-0", "b-0", "c-0"], digests) == 0  # nothing changed: nothing written
    # b-0 changes and grows by a row: b-0 is rewritten, c-0 moves (rewritten), a-0 stays.
    rows["b-0"] = 4
    expected["b-0"] = _write_part(tmp_path / "b-0.parquet", 4, dim, rng)
    assert patch(["a-0", "b-0", "c-0"], {**digests, "b-0": "d-b-0-changed"}) == 2
    assert np.array_equal(np.load(npy), np.concatenate([expected[n] for n in ("a-0", "b-0", "c-0")]))
    (tmp_path / "embeddings.npy.index.json").unlink()  # a finalize killed halfway: every part is rewritten
    assert patch(["a-0", "c-0"], digests) == 2
    assert np.array_equal(np.load(npy), np.concatenate([expected["a-0"], expected["c-0"]]))
    assert patch([], {}) == 0 and np.load(npy).shape == (0, dim)


def test_patching_a_large_matrix_holds_one_part_not_the_matrix(tmp_path, rng):
    """The matrix (here 400 MB) is written a part at a time, never mapped whole: the process's peak RSS grows by
    far less than the matrix (it grew by the matrix's size when the matrix was memory-mapped)."""
    import subprocess
    import sys

    from audiofeat.outputs.dataset import PartRows

    dim, part_rows, n_parts = 512, 4096, 50
    _write_part(tmp_path / "p.parquet", part_rows, dim, rng)
    parts = [PartRows("p", part_rows, f"d{i}") for i in range(n_parts)]
    script = (
        "import json, resource, sys; from audiofeat.outputs.dataset import PartRows, patch_embeddings\n"
        "parts = [PartRows(*p) for p in json.loads(sys.argv[1])]\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"patch_embeddings(sys.argv[2], parts, lambda name: {str(tmp_path)!r} + '/p.parquet', "
        f"column='clap_embedding', dim={dim}, "
        "index_path=sys.argv[2] + '.index.json')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps([[p.shard, p.rows, p.digest] for p in parts]),
                           str(tmp_path / "embeddings.npy")], capture_output=True, text=True, check=True)
    grown_mb, matrix_mb = float(done.stdout.split()[-1]), n_parts * part_rows * dim * 4 / 2**20
    assert (tmp_path / "embeddings.npy").stat().st_size > matrix_mb * 2**20
    assert grown_mb < matrix_mb / 8, (grown_mb, matrix_mb)


def test_a_shard_of_many_paths_is_assembled_in_the_memory_of_one_part(tmp_path):
    """A thousand paths or thirty thousand of the same three contents (one shard either way): the assembly holds
    one part's rows at a time, so its peak RSS does not grow with the paths (it held them all before: 38 MB more
    at 30,000 rows)."""
    import subprocess
    import sys

    write_tone_clips(tmp_path / "media", 3, seed=4, seconds=0.3)
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path / "media"), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")}, extractors=["loudness"])
    run_snakemake(tmp_path, config)
    paths_tsv, = (tmp_path / "results" / "bookkeeping" / "inventory" / "paths").glob("*.tsv")
    with open(paths_tsv, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    script = (
        "import json, resource, sys; from audiofeat.config.settings import load_settings\n"
        "from audiofeat.extractors import build_extractors, section_schemas\n"
        "from audiofeat.outputs.shard import assemble_shard\n"
        "extractors = build_extractors(load_settings(sys.argv[2], sections=section_schemas()))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out = sys.argv[3]\n"
        "summary = assemble_shard({'n1-000': sys.argv[1]}, json.loads(sys.argv[4]), extractors, shard='n1-000', "
        "manifests_dir=out + '/manifests', dataset_dir=out + '/dataset', summary_path=out + '/s.json', "
        "index_dir=out, write_manifests=False)\n"
        "print(summary['rows'], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    tables = json.dumps({stage: str(tmp_path / "results" / "bookkeeping" / stage / f"{paths_tsv.stem}.jsonl")
                         for stage in ("decode", "loudness")})
    grown = {}
    for count in (1_000, 30_000):
        many = tmp_path / f"{count}.tsv"
        with open(many, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows({**rows[i % 3], "relpath": f"copies/{i:06d}/{rows[i % 3]['relpath']}",
                              "path": f"/data/copies/{i:06d}/{rows[i % 3]['relpath']}"} for i in range(count))
        done = subprocess.run([sys.executable, "-c", script, str(many), str(config), str(tmp_path / f"out{count}"),
                               tables], capture_output=True, text=True, check=True)
        assembled, grown[count] = done.stdout.split()
        assert int(assembled) == count
        # Parts of up to 2,048 rows on average, their manifests built 256 at a time: every path once, each part sorted.
        for part in (tmp_path / f"out{count}" / "dataset").glob("*.parquet"):
            paths = pq.read_table(part, columns=["path"]).column("path").to_pylist()
            assert paths == sorted(paths) and len(paths) > 1024 * (count > 1_000)
        assert sorted(ds.dataset(tmp_path / f"out{count}" / "dataset").to_table(columns=["path"]).column("path")
                      .to_pylist()) == sorted(f"/data/copies/{i:06d}/{rows[i % 3]['relpath']}" for i in range(count))
    assert float(grown[30_000]) < float(grown[1_000]) + 12, grown


def test_paths_beyond_the_target_are_cut_into_groups_assembled_by_one_job_while_contents_are_computed_once(tmp_path):
    """Three contents under 21 paths with shard.target_files 4: one shard of extractor jobs (each content decoded
    once), its paths cut into groups of at most 4, each with its own parts and index, all assembled by the shard's
    one job; the dataset and manifests hold all 21. A path added reruns that one job, which rewrites one part."""
    import shutil

    from conftest import assert_dataset_is_the_manifests, created_since, read_jsonl

    clips = write_tone_clips(tmp_path / "media" / "a", 3, seed=5, seconds=0.3)
    for copy in range(6):
        for clip in clips:
            target = tmp_path / "media" / f"copy{copy}" / clip.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, target)
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path / "media"), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")}, extractors=["features", "clap"],
                          shard={"target_files": 4})
    run_snakemake(tmp_path, config)
    kept = tmp_path / "results" / "bookkeeping"
    shards = sorted(p.stem for p in (kept / "inventory" / "shards").glob("*.tsv"))
    groups = sorted(p.stem for p in (kept / "inventory" / "paths").glob("*.tsv"))
    assert shards == ["n1-000"] and len(groups) >= 6 and all(g.startswith("n1-000.g") for g in groups)
    sizes = [len(list(csv.DictReader(open(kept / "inventory" / "paths" / f"{g}.tsv"), delimiter="\t")))
             for g in groups]
    assert max(sizes) <= 4 and sum(sizes) == 21, sizes
    assert len(read_jsonl(kept / "decode" / "n1-000.jsonl")) == 3
    assert created_since(tmp_path / "cache", 0) == {"wav": 3, "features": 3, "clap": 3}
    assert sorted(p.name for p in (kept / "assembled").glob("n1-000*.json") if ".index" not in p.name) == \
        ["n1-000.json"]
    assert sorted(p.name[: -len(".index.json")] for p in (kept / "assembled").glob("n1-000*.index.json")) == groups
    assert len(list((kept / "benchmarks" / "assemble_shard").iterdir())) == 1
    assert_dataset_is_the_manifests(tmp_path / "results")
    assert len(np.load(tmp_path / "results" / "embeddings.npy")) == 21
    again = run_snakemake(tmp_path, config, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
    _serial_and_forked_assemblies_are_equal(tmp_path, config, groups)
    parts = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "dataset").glob("*.parquet")}
    target = _a_path_that_keeps_the_partition(tmp_path / "media", clips[0].name)
    shutil.copyfile(clips[0], target)  # a known content under a new path: no extractor job, one assembly
    run_snakemake(tmp_path, config)
    assert created_since(tmp_path / "cache", 0) == {"wav": 3, "features": 3, "clap": 3}
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "dataset").glob("*.parquet")}
    # One part rewritten, or one added (the path's group had none): every other part untouched.
    assert parts.keys() <= after.keys() and sum(after[name] != parts.get(name) for name in after) == 1
    assert_dataset_is_the_manifests(tmp_path / "results")
    assert len(np.load(tmp_path / "results" / "embeddings.npy")) == 22


def _serial_and_forked_assemblies_are_equal(work, config, groups):
    """The shard's groups assembled by one process and by three forked workers: the same summary (counts, parts
    in the same order, failures, flags, histograms) and the same dataset rows."""
    kept = work / "results" / "bookkeeping"
    extractors = build_extractors(load_settings(str(config), sections=section_schemas()))
    tables = {stage: str(kept / stage / "n1-000.jsonl") for stage in ("decode", *extractors)}
    summaries, rows = {}, {}
    for workers in (1, 3):
        out = work / f"workers{workers}"
        summaries[workers] = assemble.assemble_shard(
            {g: str(kept / "inventory" / "paths" / f"{g}.tsv") for g in groups}, tables, extractors, shard="n1-000",
            manifests_dir=str(out / "manifests"), dataset_dir=str(out / "dataset"), summary_path=str(out / "s.json"),
            index_dir=str(out), workers=workers)
        rows[workers] = ds.dataset(out / "dataset").to_table().sort_by("path").to_pylist()
    assert [p["rows"] for p in summaries[1]["parts"]] == [p["rows"] for p in summaries[3]["parts"]]
    assert {k: v for k, v in summaries[1].items() if k != "parts"} == \
        {k: v for k, v in summaries[3].items() if k != "parts"}
    assert len(rows[1]) == 21 and rows[1] == rows[3]


def _a_path_that_keeps_the_partition(media, name):
    """A new path under ``media`` whose addition keeps the shard's group count (a path's group depends on its
    absolute path, so on the test's folder)."""
    from audiofeat.inputs.inventory import InputFile, path_groups

    def partition(paths):  # the count in the groups' names, <shard>.g<count>-<k>
        records = [InputFile(path, "", 1, "k", 1.0) for path in paths]
        return {group.split(".g")[1].split("-")[0] for group in path_groups("n1-000", records, 4)}

    paths = [str(p) for p in media.rglob("*") if p.is_file()]
    for k in range(100):
        target = media / "copy6" / f"{k}-{name}"
        if partition([*paths, str(target)]) == partition(paths):
            target.parent.mkdir(exist_ok=True)
            return target
    raise AssertionError("no new path keeps the partition")
