"""Assembling results: per shard (:func:`assemble_shard`), its inputs' manifests and Parquet part from its
tables; for the run (:func:`run_finalize`), the summary, the embedding matrix and the store's bound, from the
shards' small summaries. Cost follows the shards that changed, not the dataset."""
from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import NamedTuple

import orjson

from . import __version__
from .faults import ArtifactGone, Fault
from .inventory import read_tsv
from .manifest import AudioInfo, AudioManifest, Source, path_text, run_schema
from .settings import CacheSettings
from .dataset import PartRows, manifest_row, part_digest, part_schema, patch_embeddings, remove_stale_parts, write_part
from .store import ArtifactStore, atomic_write_bytes, atomic_write_text, blake2b_bytes
from .tables import json_line, read_jsonl

FAILURES_LISTED_PER_CAUSE = 50


def _manifest_relpath(relpath: str) -> str:
    return relpath + ".json"


def read_shard_tables(tables: dict[str, list[str]]) -> dict[str, dict[str, dict]]:
    """``{stage: {content key: record}}`` from every shard's table (``ingest`` and each extractor's)."""
    by_stage: dict[str, dict[str, dict]] = {}
    for stage, paths in tables.items():
        table = by_stage[stage] = {}
        for path in paths:
            for record in read_jsonl(path):
                table[record["content_key"]] = record
    return by_stage


def _stored_block(stage: str, content_key: str, record: dict) -> orjson.Fragment:
    """The block an extractor stored as JSON, checked against the digest its table recorded (the bytes are read
    anyway; hashing them is cheap); :class:`ArtifactGone` when missing or not those bytes."""
    try:
        data = Path(record["artifact"]).read_bytes()
    except FileNotFoundError:
        raise ArtifactGone(stage, content_key, record["artifact"]) from None
    if blake2b_bytes(data) != record.get("artifact_digest"):
        raise ArtifactGone(stage, content_key, record["artifact"])
    return orjson.Fragment(data)  # inserted unparsed: re-serialising 27 MB of numbers was most of finalize


def build_manifest(row: dict, by_stage: dict[str, dict[str, dict]], extractors: list[str]) -> AudioManifest:
    """One input's ``audio_manifest_v1`` record from its inventory row and its shard records."""
    source = Source.of(row["path"], row["content_key"], int(row["size_bytes"]))
    stages = ["ingest", *extractors]
    records = {stage: by_stage.get(stage, {}).get(row["content_key"]) for stage in stages}
    error = row["error"] or next((r["error"] for r in records.values() if r and r["status"] == "error"), None)
    if not error and any(r is None for r in records.values()):
        error = "not processed (its shard job failed; see the logs)"
    identities, timings = {}, {}
    for stage, record in records.items():
        name = "decode" if stage == "ingest" else stage
        if record and "extractor" in record:
            identities[name] = record["extractor"]
        if record and "seconds" in record:
            timings[name] = record["seconds"]
    if error:
        return AudioManifest(source=source, status="error", audiofeat_version=__version__, error=error,
                             extractors=identities, timings=timings)
    blocks = {name: records[name]["block"] if "block" in records[name]
              else _stored_block(name, row["content_key"], records[name]) for name in extractors}
    return AudioManifest(source=source, status="ok", audiofeat_version=__version__,
                         audio=AudioInfo(**records["ingest"]["audio"]), blocks=blocks, extractors=identities,
                         timings=timings)


def artifacts_in_use(tables: dict[str, dict[str, dict]]) -> set[str]:
    """Store paths a shard's tables refer to (garbage collection never removes these)."""
    used: set[str] = set()
    for table in tables.values():
        for record in table.values():
            if record.get("audio"):
                used.add(record["audio"]["wav"])
            if record.get("artifact"):
                used.add(record["artifact"])
            if (record.get("block") or {}).get("segments_artifact"):
                used.add(record["block"]["segments_artifact"])
    return used


# Per-file cost histogram bins (seconds, log-spaced, 4 per decade from 1 ms): shards' counts add up.
COST_BINS = tuple(10 ** (k / 4) for k in range(-12, 17))
SLOWEST_KEPT = 10


def assemble_shard(paths_tsv: str, tables: dict[str, str], extractors: dict, *, manifests_dir: str,
                   part_path: str, summary_path: str, index_path: str) -> dict:
    """A shard's per-file manifests (only those whose bytes changed are written), its Parquet part and its
    summary, from its inventory rows (``paths_tsv``: every path whose content is in the shard) and its tables
    (``{stage: path}``). Returns the summary."""
    by_stage = read_shard_tables({stage: [path] for stage, path in tables.items()})
    rows = read_tsv(paths_tsv)
    try:
        manifests = [build_manifest(row, by_stage, list(extractors)).to_dict() for row in rows]
    except ArtifactGone as gone:
        Path(tables[gone.stage]).unlink()  # the same command then recomputes what the table held
        raise Fault(f"{gone}; its shard's {gone.stage} table was removed: rerun the same command") from None
    entries = [{"relpath": row["relpath"], "manifest": m, "line": json_line(m)} for row, m in zip(rows, manifests)]
    written = write_manifests(Path(manifests_dir), entries, Path(index_path))
    # Stored blocks are in the manifests as unparsed JSON: the written line is parsed once for the part's columns.
    write_part(part_path, [manifest_row(parsed, extractors, parsed) for parsed in
                           (orjson.loads(e["line"]) for e in entries)], part_schema(extractors))
    summary = shard_summary(entries, Path(manifests_dir).name)
    summary.update(part_digest=part_digest(part_path), manifests_written=written)
    atomic_write_text(summary_path, json.dumps(summary, ensure_ascii=False))
    return summary


def write_manifests(root: Path, entries: list[dict], index_path: Path) -> int:
    """Write the manifests whose bytes changed since the last time (their digests are kept in ``index_path``,
    so unchanged ones are not reread) or that are missing; remove those of paths the shard no longer has, while
    they hold what it wrote. Returns how many were written."""
    try:
        previous = json.loads(index_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        previous = {}
    current, written = {}, 0
    for entry in entries:
        line = entry.get("line") or json_line(entry["manifest"])
        digest = current[entry["relpath"]] = blake2b_bytes(line)
        path = root / _manifest_relpath(entry["relpath"])
        if previous.get(entry["relpath"]) != digest or not path.exists():
            atomic_write_bytes(path, line, durable=False)  # derived: rewritten by the next run if lost
            written += 1
    for relpath, digest in previous.items():
        if relpath not in current:
            _remove_if_ours(root / _manifest_relpath(relpath), digest)
    atomic_write_text(index_path, json.dumps(current))  # ASCII: a name that is not UTF-8 stays escaped
    return written


def _remove_if_ours(path: Path, digest: str) -> None:
    """Remove a manifest the shard wrote, unless another shard has rewritten it since (its content changed)."""
    try:
        if blake2b_bytes(path.read_bytes()) == digest:
            path.unlink()
    except FileNotFoundError:
        pass


def shard_summary(entries: list[dict], manifests_folder: str) -> dict:
    """Counts, failures by cause, the slowest files and the per-file cost histogram of one shard's inputs."""
    costs = [(m["manifest"]["source"]["path"], sum(m["manifest"].get("timings", {}).values())) for m in entries]
    histogram = [0] * (len(COST_BINS) + 1)
    for _, cost in costs:
        histogram[bisect.bisect(COST_BINS, cost)] += 1
    return {"rows": len(entries), "ok": sum(e["manifest"]["status"] == "ok" for e in entries),
            "failed": sum(e["manifest"]["status"] == "error" for e in entries),
            "slowest": sorted(costs, key=lambda item: -item[1])[:SLOWEST_KEPT], "cost_histogram": histogram,
            **failure_summary(entries, manifests_folder)}


def assemble_unhashed(errors_tsv: str, extractors: dict, *, manifests_dir: str, part_path: str,
                      index_path: str) -> dict:
    """The inputs the inventory could not hash (unreadable, say): their manifests, part and summary."""
    rows = read_tsv(errors_tsv)
    entries = [{"relpath": row["relpath"], "manifest": build_manifest(row, {}, list(extractors)).to_dict()}
               for row in rows]
    write_manifests(Path(manifests_dir), entries, Path(index_path))
    if not entries:
        Path(part_path).unlink(missing_ok=True)
        return {**shard_summary([], Path(manifests_dir).name), "part_digest": None}
    write_part(part_path, [manifest_row(e["manifest"], extractors, e["manifest"]) for e in entries],
               part_schema(extractors))
    return {**shard_summary(entries, Path(manifests_dir).name), "part_digest": part_digest(part_path)}


UNHASHED = "unhashed"  # the part and index of inputs the inventory could not hash; sorts after "n<count>-..."


class FinalizeResult(NamedTuple):
    """What :func:`run_finalize` wrote the summary of, and the per-file costs the report shows."""

    summary: dict
    slowest: list
    cost_histogram: list


def run_finalize(summaries: dict[str, str], errors_tsv: str, extractors: dict, *, dataset_dir: str,
                 manifests_dir: str, assembled_dir: str, summary_json: str, schema_json: str, embeddings_npy: str | None,
                 cache: CacheSettings, tables: dict[str, list[str]]) -> FinalizeResult:
    """The run's outputs from the shards' summaries (``{shard: path}``): the unhashed inputs' part, the
    embedding matrix patched where parts changed (when CLAP ran), the manifest schema and the summary; then
    the store is bounded (``cache.ttl_hours``, ``cache.max_gb``) sparing what ``tables`` name."""
    by_shard = {shard: json.loads(Path(path).read_text(encoding="utf-8")) for shard, path in summaries.items()}
    dataset = Path(dataset_dir)
    by_shard[UNHASHED] = assemble_unhashed(errors_tsv, extractors, manifests_dir=manifests_dir,
                                           part_path=str(dataset / f"{UNHASHED}.parquet"),
                                           index_path=str(Path(assembled_dir) / f"{UNHASHED}.index.json"))
    parts = [PartRows(shard, by_shard[shard]["rows"], by_shard[shard]["part_digest"])
             for shard in sorted(by_shard) if by_shard[shard]["part_digest"]]
    remove_stale_parts(dataset, [p.shard for p in parts])
    if embeddings_npy:
        from .extractors.clap import EMBEDDING_DIM

        patch_embeddings(embeddings_npy, parts, lambda shard: dataset / f"{shard}.parquet", dim=EMBEDDING_DIM)
    atomic_write_text(schema_json, json.dumps(run_schema(list(extractors)), indent=1))
    summary = merged_summary(list(by_shard.values()), list(extractors))
    if cache.enabled and (cache.ttl_hours or cache.max_gb):
        summary["cache_gc"] = ArtifactStore(cache.dir).collect_garbage(
            ttl_hours=cache.ttl_hours, max_gb=cache.max_gb, protect=artifacts_in_use(read_shard_tables(tables)))
    atomic_write_text(summary_json, json.dumps(summary, indent=1, ensure_ascii=False))
    slowest = sorted((tuple(x) for s in by_shard.values() for x in s["slowest"]), key=lambda x: -x[1])[:SLOWEST_KEPT]
    histogram = [sum(counts) for counts in zip(*(s["cost_histogram"] for s in by_shard.values()))]
    return FinalizeResult(summary, slowest, histogram)


def merged_summary(shards: list[dict], extractors: list[str]) -> dict:
    """The run's summary from its shards': counts, failures by cause (the first files of each), failed files."""
    causes: dict[str, dict] = {}
    for shard in shards:
        for group in shard["failures"]:
            merged = causes.setdefault(group["cause"], {"count": 0, "files": []})
            merged["count"] += group["count"]
            merged["files"] += group["files"][:FAILURES_LISTED_PER_CAUSE - len(merged["files"])]
    return {"ok": sum(s["ok"] for s in shards), "failed": sum(s["failed"] for s in shards), "extractors": extractors,
            "failures_by_cause": {cause: g["count"] for cause, g in sorted(causes.items())},
            "failures": [{"cause": cause, "count": g["count"], "files": g["files"], "more": g["count"] - len(g["files"])}
                         for cause, g in sorted(causes.items())],
            "failed_files": [path for s in shards for path in s["failed_files"]]}


def failure_summary(entries: list[dict], manifests_folder: str) -> dict:
    """Failures grouped by cause (the error up to its first parenthesis), each with its first
    :data:`FAILURES_LISTED_PER_CAUSE` files and their manifests (relative to the results folder), and the count of
    the rest; ``failed_files`` lists every failed path. ``entries`` are ``{"relpath", "manifest"}``."""
    by_cause: dict[str, dict] = {}
    failed = []
    for entry in entries:
        manifest = entry["manifest"]
        if manifest["status"] != "error":
            continue
        failed.append(manifest["source"]["path"])
        group = by_cause.setdefault(manifest["error"].split(" (")[0], {"count": 0, "files": []})
        group["count"] += 1
        if len(group["files"]) < FAILURES_LISTED_PER_CAUSE:
            link = f"{manifests_folder}/{path_text(_manifest_relpath(entry['relpath']))}"
            group["files"].append({"path": manifest["source"]["path"], "manifest": link})
    return {"failures_by_cause": {cause: g["count"] for cause, g in sorted(by_cause.items())},
            "failures": [{"cause": cause, "count": g["count"], "files": g["files"],
                          "more": g["count"] - len(g["files"])} for cause, g in sorted(by_cause.items())],
            "failed_files": failed}


def summary_line(summary: dict) -> str:
    return f"{summary['ok']} ok, {summary['failed']} failed"
