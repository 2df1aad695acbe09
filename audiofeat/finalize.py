"""The dataset-level outputs: per-file manifests, ``manifest.jsonl``, the embedding matrix and the run summary,
assembled from every shard's tables."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from . import __version__
from .faults import Fault
from .inventory import read_tsv
from .manifest import AudioInfo, AudioManifest, Source, path_text, run_schema
from .settings import CacheSettings
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


class ArtifactGone(Fault):
    """An artifact a shard table names is missing or damaged (another run's gc sharing the store)."""

    def __init__(self, stage: str, content_key: str, artifact: str) -> None:
        super().__init__(f"{stage} artifact {artifact} is gone from the store or damaged (another run's gc?)")
        self.stage, self.content_key, self.artifact = stage, content_key, artifact


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
    records = {stage: by_stage[stage].get(row["content_key"]) for stage in stages}
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
    """Store paths the current run's shard tables refer to (garbage collection never removes these)."""
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


class FinalizeResult(NamedTuple):
    """What :func:`run_finalize` wrote the summary of, and each input's path with its manifest's timings summed."""

    summary: dict
    file_seconds: list[tuple[str, float]]


def _write_manifests(root: Path, entries: list[dict], manifest_jsonl: str) -> None:
    """Per-file manifests (only changed ones rewritten: after adding one file to a large run, one is written)
    and ``manifest.jsonl``; manifests of inputs that are gone are removed."""
    root.mkdir(parents=True, exist_ok=True)
    lines, current = [], set()
    for entry in entries:
        line = json_line(entry["manifest"])
        path = root / _manifest_relpath(entry["relpath"])
        current.add(path)
        try:
            unchanged = path.read_bytes() == line
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            atomic_write_bytes(path, line, durable=False)  # derived from manifest.jsonl: no fsync per file
        lines.append(line)
    for stale in root.rglob("*.json"):
        if stale not in current:
            stale.unlink()
    atomic_write_bytes(manifest_jsonl, b"".join(lines))


def _write_embeddings(path: str, manifests: list[dict]) -> None:
    """The ``[shape=(inputs, 512)]`` float32 matrix of clip embeddings, in the inventory's order (rows of failed
    inputs stay zero)."""
    dim = next((len(m["clap"]["embedding"]) for m in manifests if m["status"] == "ok"), 512)
    matrix = np.zeros((len(manifests), dim), dtype=np.float32)
    for index, manifest in enumerate(manifests):
        if manifest["status"] == "ok":
            matrix[index] = manifest["clap"]["embedding"]
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    atomic_write_bytes(path, buffer.getvalue())


def run_finalize(files_tsv: str, tables: dict[str, list[str]], extractors: list[str], *, manifests_dir: str,
                 manifest_jsonl: str, summary_json: str, schema_json: str, embeddings_npy: str | None,
                 cache: CacheSettings) -> FinalizeResult:
    """Write the manifests, ``manifest.jsonl``, the run's manifest schema, the embedding matrix (when CLAP ran)
    and the summary, then bound the store (``cache.ttl_hours``, ``cache.max_gb``) sparing what this run uses.
    ``tables`` maps ``ingest`` and each of ``extractors`` to its shard tables."""
    by_stage = read_shard_tables(tables)
    try:
        rows = read_tsv(files_tsv)
        manifests = [build_manifest(row, by_stage, extractors).to_dict() for row in rows]
    except ArtifactGone as gone:
        # The tables that name it are removed, so that the same command recomputes what they held.
        for table in tables[gone.stage]:
            if any(r["content_key"] == gone.content_key for r in read_jsonl(table)):
                Path(table).unlink()
        raise Fault(f"{gone}; its shard's {gone.stage} table was removed: rerun the same command") from None
    entries = [{"relpath": row["relpath"], "manifest": m} for row, m in zip(rows, manifests)]
    _write_manifests(Path(manifests_dir), entries, manifest_jsonl)
    atomic_write_text(schema_json, json.dumps(run_schema(extractors), indent=1))
    if embeddings_npy:
        _write_embeddings(embeddings_npy, manifests)
    summary = {"ok": sum(m["status"] == "ok" for m in manifests), "failed": sum(m["status"] == "error" for m in manifests),
               "extractors": extractors, **failure_summary(entries, Path(manifests_dir).name)}
    if cache.enabled and (cache.ttl_hours or cache.max_gb):
        summary["cache_gc"] = ArtifactStore(cache.dir).collect_garbage(
            ttl_hours=cache.ttl_hours, max_gb=cache.max_gb, protect=artifacts_in_use(by_stage))
    atomic_write_text(summary_json, json.dumps(summary, indent=1, ensure_ascii=False))
    return FinalizeResult(summary, [(m["source"]["path"], sum(m.get("timings", {}).values())) for m in manifests])


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
