"""Assembling results: per shard (:func:`assemble_shard`), its inputs' manifests and Parquet part from its
tables; for the run (:func:`run_finalize`), the summary, the embedding matrix and the store's bound, from the
shards' small summaries. Cost follows the shards that changed, not the dataset."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import orjson

from . import __version__
from .faults import ArtifactGone, Fault
from .manifest import AudioInfo, AudioManifest, Source, run_schema
from .settings import CacheSettings
from .dataset import PartRows, patch_embeddings, remove_stale_parts
from .store import ArtifactStore, atomic_write_text, blake2b_bytes
from .tables import read_jsonl

FAILURES_LISTED_PER_CAUSE = 50


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


UNHASHED = "unhashed"  # the parts and index of inputs the inventory could not hash; sorts after "n<count>-..."


class FinalizeResult(NamedTuple):
    """What :func:`run_finalize` wrote the summary of, and the per-file costs the report shows."""

    summary: dict
    slowest: list
    cost_histogram: list


def run_finalize(summaries: dict[str, str], errors_tsv: str, extractors: dict, *, dataset_dir: str,
                 manifests_dir: str, assembled_dir: str, summary_json: str, schema_json: str,
                 embeddings_npy: str | None, cache: CacheSettings, tables: dict[str, list[str]]) -> FinalizeResult:
    """The run's outputs from the shards' summaries (``{shard: path}``): the unhashed inputs' manifests and
    part, the embedding matrix patched where parts changed (when CLAP ran), the manifest schema and the summary;
    then the store is bounded (``cache.ttl_hours``, ``cache.max_gb``) sparing what ``tables`` name."""
    from .assemble import assemble_shard

    by_shard = {shard: json.loads(Path(path).read_text(encoding="utf-8")) for shard, path in summaries.items()}
    dataset = Path(dataset_dir)
    by_shard[UNHASHED] = assemble_shard(
        errors_tsv, {}, extractors, shard=UNHASHED, manifests_dir=manifests_dir, dataset_dir=dataset_dir,
        summary_path=str(Path(assembled_dir) / f"{UNHASHED}.json"),
        index_path=str(Path(assembled_dir) / f"{UNHASHED}.index.json"))
    parts = [PartRows(p["name"], p["rows"], p["digest"]) for shard in sorted(by_shard) for p in by_shard[shard]["parts"]]
    _check_parts(dataset, parts, summaries)
    remove_stale_parts(dataset, [p.shard for p in parts])
    if embeddings_npy:
        from .extractors.clap import EMBEDDING_DIM

        patch_embeddings(embeddings_npy, parts, lambda name: dataset / f"{name}.parquet", dim=EMBEDDING_DIM)
    atomic_write_text(schema_json, json.dumps(run_schema(list(extractors)), indent=1))
    summary = merged_summary(list(by_shard.values()), list(extractors))
    if cache.enabled and (cache.ttl_hours or cache.max_gb):
        summary["cache_gc"] = ArtifactStore(cache.dir).collect_garbage(
            ttl_hours=cache.ttl_hours, max_gb=cache.max_gb, protect=artifacts_in_use(read_shard_tables(tables)))
    atomic_write_text(summary_json, json.dumps(summary, indent=1, ensure_ascii=False))
    slowest = sorted((tuple(x) for s in by_shard.values() for x in s["slowest"]), key=lambda x: -x[1])[:SLOWEST_KEPT]
    histogram = [sum(counts) for counts in zip(*(s["cost_histogram"] for s in by_shard.values()))]
    return FinalizeResult(summary, slowest, histogram)


def _check_parts(dataset: Path, parts: list[PartRows], summaries: dict[str, str]) -> None:
    """A part a shard's summary lists but the folder lacks (removed by hand, say) is a fault; the shard's summary
    is removed, so that the same command assembles the shard again."""
    for part in parts:
        if not (dataset / f"{part.shard}.parquet").exists():
            shard = part.shard.rsplit("-", 1)[0]
            if shard in summaries:
                Path(summaries[shard]).unlink(missing_ok=True)
            raise Fault(f"dataset part {dataset / part.shard}.parquet is missing; its shard's summary was removed: "
                        "rerun the same command")


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


def summary_line(summary: dict) -> str:
    return f"{summary['ok']} ok, {summary['failed']} failed"
