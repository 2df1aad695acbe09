"""Assembling results: per shard (:func:`assemble_shard`), its inputs' manifests and Parquet part from its
tables; for the run (:func:`run_finalize`), the summary, the embedding matrix and the store's bound, from the
shards' small summaries. Cost follows the shards that changed, not the dataset."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from ..config.settings import CacheSettings, FlagsSettings
from ..faults import Fault
from ..inputs.inventory import content_shard
from ..store.artifacts import ArtifactStore, atomic_write_text
from .curation import CurationCounts
from .dataset import PartRows, patch_embeddings, remove_stale_parts
from .manifest import run_schema
from .shard import FAILURES_LISTED_PER_CAUSE, SLOWEST_KEPT, assemble_shard, read_shard_tables


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




UNHASHED = "unhashed"  # the parts and index of inputs the inventory could not hash; sorts after "n<count>-..."


class FinalizeResult(NamedTuple):
    """What :func:`run_finalize` wrote the summary of, and the per-file costs the report shows."""

    summary: dict
    slowest: list
    cost_histogram: list
    curation: dict  # flagged inputs by reason and the main numbers' bin counts (CurationCounts.to_dict)


def run_finalize(summaries: dict[str, str], errors_tsv: str, extractors: dict, *, dataset_dir: str,
                 manifests_dir: str, assembled_dir: str, summary_json: str, schema_json: str,
                 matrices: dict[str, tuple[str, str]], cache: CacheSettings, tables: dict[str, list[str]],
                 write_manifests: bool = True, flags: FlagsSettings = FlagsSettings()) -> FinalizeResult:
    """The run's outputs from the shards' summaries (``{shard: path}``): the unhashed inputs' manifests and
    part, the extractors' matrices (``matrices``: ``{extractor: (npy path, index path)}``, see
    :attr:`Extractor.matrix`) patched where parts changed, the manifest schema and the summary; then the store is
    bounded (``cache.ttl_hours``, ``cache.max_gb``) sparing what ``tables`` name."""
    by_shard = {shard: json.loads(Path(path).read_text(encoding="utf-8")) for shard, path in summaries.items()}
    dataset = Path(dataset_dir)
    by_shard[UNHASHED] = assemble_shard(
        {UNHASHED: errors_tsv}, {}, extractors, shard=UNHASHED, manifests_dir=manifests_dir, dataset_dir=dataset_dir,
        summary_path=str(Path(assembled_dir) / f"{UNHASHED}.json"), index_dir=assembled_dir,
        write_manifests=write_manifests, flags=flags)
    parts = [PartRows(p["name"], p["rows"], p["digest"]) for shard in sorted(by_shard) for p in by_shard[shard]["parts"]]
    _check_parts(dataset, parts, summaries)
    remove_stale_parts(dataset, [p.shard for p in parts])
    for extractor, (npy, index) in matrices.items():
        _, column, dim = extractors[extractor].matrix
        patch_embeddings(npy, parts, lambda name: dataset / f"{name}.parquet", column=column, dim=dim,
                         index_path=index)
    atomic_write_text(schema_json, json.dumps(run_schema({name: e.block_schema for name, e in extractors.items()}), indent=1))
    curation = merged_curation(list(by_shard.values()))
    summary = merged_summary(list(by_shard.values()), list(extractors), curation)
    if cache.enabled and (cache.ttl_hours or cache.max_gb):
        summary["cache_gc"] = ArtifactStore(cache.dir).collect_garbage(
            ttl_hours=cache.ttl_hours, max_gb=cache.max_gb, grace_hours=cache.gc_grace_hours, protect=artifacts_in_use(read_shard_tables(tables)))
    atomic_write_text(summary_json, json.dumps(summary, indent=1, ensure_ascii=False))
    slowest = sorted((tuple(x) for s in by_shard.values() for x in s["slowest"]), key=lambda x: -x[1])[:SLOWEST_KEPT]
    histogram = [sum(counts) for counts in zip(*(s["cost_histogram"] for s in by_shard.values()))]
    return FinalizeResult(summary, slowest, histogram, curation)


def merged_curation(shards: list[dict]) -> dict:
    """The run's flagged inputs by reason (the first of each listed) and the main numbers' bin counts."""
    counts = CurationCounts()
    for shard in shards:
        counts.merge(shard)
    return counts.to_dict()


def _check_parts(dataset: Path, parts: list[PartRows], summaries: dict[str, str]) -> None:
    """A part a shard's summary lists but the folder lacks (removed by hand, say) is a fault; the shard's summary
    is removed, so that the same command assembles the shard again."""
    for part in parts:
        if not (dataset / f"{part.shard}.parquet").exists():
            shard = content_shard(part.shard.rsplit("-", 1)[0])  # a part of <shard>[.g<count>-<k>]
            if shard in summaries:
                Path(summaries[shard]).unlink(missing_ok=True)
            raise Fault(f"dataset part {dataset / part.shard}.parquet is missing; its shard's summary was removed: "
                        "rerun the same command")


def merged_summary(shards: list[dict], extractors: list[str], curation: dict | None = None) -> dict:
    """The run's summary from its shards': counts, failures by cause (the first files of each), failed files,
    flagged files by reason (from ``curation``, :func:`merged_curation`'s, merged here when not given)."""
    curation = curation or merged_curation(shards)
    causes: dict[str, dict] = {}
    for shard in shards:
        for group in shard["failures"]:
            merged = causes.setdefault(group["cause"], {"count": 0, "files": []})
            merged["count"] += group["count"]
            merged["files"] += group["files"][:FAILURES_LISTED_PER_CAUSE - len(merged["files"])]
    return {"ok": sum(s["ok"] for s in shards), "failed": sum(s["failed"] for s in shards), "extractors": extractors,
            "failures_by_cause": {cause: g["count"] for cause, g in sorted(causes.items())},
            "flagged_by_reason": {g["reason"]: g["count"] for g in curation["flagged"]},
            "failures": [{"cause": cause, "count": g["count"], "files": g["files"], "more": g["count"] - len(g["files"])}
                         for cause, g in sorted(causes.items())],
            "failed_files": [path for s in shards for path in s["failed_files"]]}


def summary_line(summary: dict) -> str:
    return f"{summary['ok']} ok, {summary['failed']} failed"
