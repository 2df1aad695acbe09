"""A shard's assembly: its inputs' manifests and its Parquet parts, redone only where something changed.

Each input (row) gets a *signature*: a digest of its inventory row and of its records in the shard's tables.
The shard's index keeps, per row, the signature, its manifest's digest and what its summary needs (status, cost,
error). A rerun builds manifests only for rows whose signature changed, writes only those whose bytes changed,
and rewrites only the parts (``dataset/<shard>-<k>.parquet``, about :data:`PART_ROWS` rows each, a row's
part picked by its path) that hold a changed, added or removed row, keeping the other rows of such a part from
its previous file. Adding one file to 100,000 paths is one manifest and one part of about 1,000 rows, not 100,000.
"""
from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path

import orjson

from ..faults import ArtifactGone, Fault
from ..inputs.inventory import path_text, read_tsv
from ..store.artifacts import atomic_write_bytes, atomic_write_text, blake2b_bytes
from ..store.tables import json_line, read_jsonl
from .dataset import manifest_row, part_digest, part_schema, write_part
from .manifest import build_manifest

FAILURES_LISTED_PER_CAUSE = 50
# Per-file cost histogram bins (seconds, log-spaced, 4 per decade from 1 ms): shards' counts add up.
COST_BINS = tuple(10 ** (k / 4) for k in range(-12, 17))
SLOWEST_KEPT = 10
PART_ROWS = 1024  # a part's rows are in memory as dicts while it is rebuilt (~100 KB each)
INDEX_FORMAT = 2  # bump when what a row's signature covers, or a part's columns, change


def read_shard_tables(tables: dict[str, list[str]]) -> dict[str, dict[str, dict]]:
    """``{stage: {content key: record}}`` from every shard's table (``decode`` and each extractor's)."""
    by_stage: dict[str, dict[str, dict]] = {}
    for stage, paths in tables.items():
        table = by_stage[stage] = {}
        for path in paths:
            for record in read_jsonl(path):
                table[record["content_key"]] = record
    return by_stage


def part_count(rows: int) -> int:
    """Parts of a shard with ``rows`` inputs: the smallest power of two giving at most :data:`PART_ROWS` each
    on average (a power of two, so that growing the shard moves few rows)."""
    count = 1
    while count * PART_ROWS < rows:
        count *= 2
    return count


def part_of(relpath: str, parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(relpath.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                          "big") % parts


# Record fields no manifest shows: a rerun that finds a file's artifacts in the store rewrites its records with
# them, and must not make its row look changed.
_NOT_IN_MANIFESTS = ("cache_hit",)


def row_signatures(rows: list[dict], by_stage: dict[str, dict[str, dict]], extractors: list[str], *,
                   write_manifests: bool = True) -> list[str]:
    """Each row's signature: what its manifest is made of (its inventory row, its records, the extractors), and
    whether it is written as a file."""
    record_digest: dict[str, bytes] = {}
    header = json.dumps([INDEX_FORMAT, extractors, write_manifests]).encode()
    signatures = []
    for row in rows:
        key = row["content_key"]
        if key not in record_digest:
            records = [by_stage.get(stage, {}).get(key) for stage in ("decode", *extractors)]
            records = [{k: v for k, v in r.items() if k not in _NOT_IN_MANIFESTS} if r else r for r in records]
            record_digest[key] = hashlib.blake2b(orjson.dumps(records, option=orjson.OPT_SORT_KEYS),
                                                 digest_size=16).digest()
        fields = "\t".join(row.get(c) or "" for c in ("path", "relpath", "size_bytes", "error"))
        signatures.append(hashlib.blake2b(header + fields.encode("utf-8", "surrogateescape") + record_digest[key],
                                          digest_size=16).hexdigest())
    return signatures


def assemble_shard(paths_tsv: str, tables: dict[str, str], extractors: dict, *, shard: str, manifests_dir: str,
                   dataset_dir: str, summary_path: str, index_path: str, write_manifests: bool = True) -> dict:
    """Bring a shard's manifests and Parquet parts up to date with its inventory rows (``paths_tsv``: every path
    whose content is in the shard) and its tables (``{stage: path}``); write and return its summary. One part
    at a time: memory follows a part's rows, not the shard's. Without ``write_manifests`` (``outputs.manifests:
    none``) the manifests are the dataset's rows only, and the shard's manifest files are removed."""
    by_stage = read_shard_tables({stage: [path] for stage, path in tables.items()})
    rows = read_tsv(paths_tsv)
    index, dataset, root = _read_index(index_path), Path(dataset_dir), Path(manifests_dir)
    parts = part_count(len(rows))
    previous = {p["name"]: p for p in index["part_list"]} if index["parts"] == parts else {}
    if index["parts"] != parts:  # re-partitioned: the old parts go
        for old in index["part_list"]:
            (dataset / f"{old['name']}.parquet").unlink(missing_ok=True)
    signatures = row_signatures(rows, by_stage, list(extractors), write_manifests=write_manifests)
    members: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        members.setdefault(part_of(row["relpath"], parts), []).append(i)
    relpaths = {row["relpath"] for row in rows}
    removed = [relpath for relpath in index["rows"] if relpath not in relpaths]
    for relpath in removed:
        _remove_if_ours(root / f"{relpath}.json", index["rows"][relpath][1])
    touched = {part_of(relpath, parts) for relpath in removed}
    current, part_list, written = {}, [], 0
    for k, indices in sorted(members.items()):
        name = f"{shard}-{k:04d}"
        path = dataset / f"{name}.parquet"
        lost = name not in previous or not path.exists()  # rebuilt whole: every row built again
        changed = [i for i in indices if lost or index["rows"].get(rows[i]["relpath"], [None])[0] != signatures[i]]
        entries, new_rows, count = _update_manifests(rows, changed, signatures, by_stage, extractors, tables,
                                                     index["rows"], root, write=write_manifests)
        written += count
        current.update({rows[i]["relpath"]: entries.get(rows[i]["relpath"]) or index["rows"][rows[i]["relpath"]]
                        for i in indices})
        if changed or k in touched:
            _rewrite_part(path, [(rows[i]["relpath"], path_text(rows[i]["path"])) for i in indices], new_rows,
                          extractors, part_schema(extractors))
            part_list.append({"name": name, "rows": len(indices), "digest": part_digest(path)})
        else:
            part_list.append(previous[name])
    for k in touched - set(members):  # a part left empty
        (dataset / f"{shard}-{k:04d}.parquet").unlink(missing_ok=True)
    atomic_write_text(index_path, json.dumps({"parts": parts, "part_list": part_list, "rows": current}))
    summary = {**shard_summary(rows, current, root.name if write_manifests else None), "parts": part_list,
               "manifests_written": written}
    atomic_write_text(summary_path, json.dumps(summary, ensure_ascii=False))
    return summary


def _update_manifests(rows, changed, signatures, by_stage, extractors, tables, previous: dict, root: Path, *,
                      write: bool):
    """Build the ``changed`` rows' manifests and write those whose bytes changed (or are missing); without
    ``write``, remove the files of theirs written before. Returns their index entries and manifests as dicts
    (both by relpath), and how many were written."""
    try:
        built = {i: build_manifest(rows[i], by_stage, list(extractors)).to_dict() for i in changed}
    except ArtifactGone as gone:
        Path(tables[gone.stage]).unlink()  # the same command then recomputes what the table held
        raise Fault(f"{gone}; its shard's {gone.stage} table was removed: rerun the same command") from None
    entries, new_rows, written = {}, {}, 0
    for i, manifest in built.items():
        relpath = rows[i]["relpath"]
        line = json_line(manifest)
        entry = entries[relpath] = _index_entry(signatures[i], blake2b_bytes(line), manifest)
        path = root / f"{relpath}.json"
        if not write:
            if relpath in previous:
                _remove_if_ours(path, previous[relpath][1])
        elif previous.get(relpath, [None, None])[1] != entry[1] or not path.exists():
            atomic_write_bytes(path, line, durable=False)  # derived: rewritten by the next run if lost
            written += 1
        new_rows[relpath] = orjson.loads(line)  # stored blocks arrive unparsed: parsed once, here
    return entries, new_rows, written


def _read_index(index_path: str) -> dict:
    try:
        index = json.loads(Path(index_path).read_text(encoding="utf-8"))
        if isinstance(index, dict) and {"parts", "part_list", "rows"} <= index.keys():
            return index
    except (FileNotFoundError, ValueError):
        pass
    return {"parts": 0, "part_list": [], "rows": {}}


def _index_entry(signature: str, digest: str, manifest: dict) -> list:
    """``[signature, manifest digest, status, cost in seconds, error]``: what the summary needs of a row."""
    return [signature, digest, manifest["status"], round(sum(manifest.get("timings", {}).values()), 6),
            manifest.get("error")]


def _remove_if_ours(path: Path, digest: str) -> None:
    """Remove a manifest the shard wrote, unless another shard has rewritten it since (its content changed)."""
    try:
        if blake2b_bytes(path.read_bytes()) == digest:
            path.unlink()
    except FileNotFoundError:
        pass


def _rewrite_part(path: Path, part_rows: list[tuple[str, str]], new_rows: dict, extractors: dict, schema) -> None:
    """A part's rows sorted by path: the rebuilt ones from ``new_rows``, the others from its previous file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([manifest_row(new_rows[r], extractors)
                                  for r, _ in part_rows if r in new_rows], schema=schema)
    kept = [p for r, p in part_rows if r not in new_rows]
    if kept:
        old = pq.read_table(path, schema=schema)
        table = pa.concat_tables([old.filter(pc.is_in(old["path"], value_set=pa.array(kept))), table])
    write_part(path, table.sort_by("path"))


def shard_summary(rows: list[dict], entries: dict[str, list], manifests_folder: str | None) -> dict:
    """Counts, failures by cause (the first files of each, with their manifests' paths in ``manifests_folder``
    when they are written), failed files, the slowest files and the per-file cost histogram of a shard, from
    its index entries (no manifest is read)."""
    histogram = [0] * (len(COST_BINS) + 1)
    costs, causes, failed = [], {}, []
    for row in rows:
        _signature, _digest, status, cost, error = entries[row["relpath"]]
        path = path_text(row["path"])
        histogram[bisect.bisect(COST_BINS, cost)] += 1
        costs.append((path, cost))
        if status == "error":
            failed.append(path)
            group = causes.setdefault(error.split(" (")[0], {"count": 0, "files": []})
            group["count"] += 1
            if len(group["files"]) < FAILURES_LISTED_PER_CAUSE:
                listed = {"path": path}
                if manifests_folder:
                    listed["manifest"] = f"{manifests_folder}/{path_text(row['relpath'])}.json"
                group["files"].append(listed)
    return {"rows": len(rows), "ok": len(rows) - len(failed), "failed": len(failed),
            "slowest": sorted(costs, key=lambda item: -item[1])[:SLOWEST_KEPT], "cost_histogram": histogram,
            "failures": [{"cause": c, "count": g["count"], "files": g["files"], "more": g["count"] - len(g["files"])}
                         for c, g in sorted(causes.items())],
            "failed_files": failed}
