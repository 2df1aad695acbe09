"""The shard runner: lookup -> compute what is missing -> store -> records, the same for every extractor.

A shard job reads its shard's table, finds every artifact it can in the store, has the extractor compute the
rest, stores each result as it comes, and writes one record per content key. A file's verdict becomes an
``error`` record with a one-line reason and the job goes on; a fault fails the job.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..config.settings import Settings
from ..faults import ArtifactGone, Fault, is_fault, one_line
from ..inputs.inventory import read_tsv
from ..store.artifacts import ArtifactStore, StoredArtifact, keep_copy
from ..store.tables import DecodeRecord, ExtractRecord, read_jsonl, read_table, write_table
from .base import Computed, Extractor
from .decode import DecodeExtractor
from .profiling import JobProfile, Progress
from .registry import EXTRACTORS

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> ArtifactStore:
    """The configured store; with ``cache.enabled: false`` a run-private folder that is never read back."""
    return ArtifactStore(settings.store_dir(), reuse=settings.cache.enabled)


def run_decode(shard_tsv: str, out_jsonl: str, profile_json: str, settings: Settings, *,
               threads: int = 1, progress_json: str | None = None) -> JobProfile:
    """Decode every input of a shard (or find its WAV), ``threads`` files at a time: FFmpeg's decoders, soxr and
    the store's writes release the GIL. ``progress_json``: where :class:`Progress` keeps how far the job is."""
    store, decoder = open_store(settings), DecodeExtractor.from_settings(settings)
    profile = JobProfile("decode", Path(shard_tsv).stem, extra={"threads": threads})
    rows = read_tsv(shard_tsv)
    progress = Progress("decode", profile.shard, files=len(rows), path=progress_json, log=logger)
    records = []
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:
        for record, hit in pool.map(lambda row: decoder.decode(row, store, profile), rows):
            progress.advance()
            records.append(record)
            profile.files += 1
            profile.cache_hits += hit
            profile.cache_misses += not hit
            if record.ok:
                profile.audio_seconds += record.duration_s
            else:
                profile.failed += 1
                logger.error("decode: %s: %s", record.path, record.error.removeprefix("decode: "))
    with profile.timer("write"):
        write_table(out_jsonl, records)
    profile.write(profile_json)
    progress.finish()
    return profile


def run_extractor(name: str, decode_jsonl: str, out_jsonl: str, profile_json: str, settings: Settings, *,
                  threads: int = 1, previous_jsonl: str | None = None, progress_json: str | None = None,
                  run_summary: str | None = None, shard_tsv: str | None = None) -> JobProfile:
    """One extractor over a shard's decoded files. ``previous_jsonl`` keeps a copy of the shard's table from one
    run to the next (Snakemake deletes a declared output before its job): an ``inline_block`` extractor takes a
    cached file's block from there while the artifact it names is the one in the store, digest included.
    A WAV gone from the store removes the shard's decode table and ``run_summary`` (the run's last output:
    Snakemake reruns nothing below outputs that are up to date), so that the same command decodes it again."""
    profile = JobProfile(name, Path(decode_jsonl).stem, extra={"threads": threads})
    with profile.timer("setup"):
        extractor = EXTRACTORS[name].from_settings(settings, job=True)
    files = read_table(decode_jsonl, DecodeRecord)
    if extractor.reads_source:
        extractor.use_sources({row["content_key"]: row for row in read_tsv(shard_tsv)})
    try:
        records = extract(extractor, files, open_store(settings), threads=threads, profile=profile,
                          previous=_previous_records(previous_jsonl), progress_json=progress_json)
    except ArtifactGone as gone:
        for stale in (decode_jsonl, run_summary):
            if stale:
                Path(stale).unlink(missing_ok=True)
        raise Fault(f"{gone}; its shard's decode table was removed: rerun the same command") from None
    with profile.timer("write"):
        write_table(out_jsonl, records)
        if previous_jsonl and extractor.inline_block:
            keep_copy(out_jsonl, previous_jsonl)
    profile.write(profile_json)
    return profile


def extract(extractor: Extractor, files: list[DecodeRecord], store: ArtifactStore, *, threads: int,
            profile: JobProfile, previous: dict[str, ExtractRecord] | None = None,
            progress_json: str | None = None) -> list[ExtractRecord]:
    """One record per file, in order: looked up, else computed and stored (on a pool of writers, so that a
    device never waits for the disk). How far the computing is goes to the log every few seconds."""
    done: dict[str, ExtractRecord] = {}
    todo, seen = [], set()
    for file in files:
        if file.content_key in seen:
            continue  # the same content twice (a caller's list): computed once
        seen.add(file.content_key)
        if not file.ok:
            done[file.content_key] = ExtractRecord(file.content_key, "skipped")
        elif (record := lookup(extractor, store, file, (previous or {}).get(file.content_key))) is not None:
            done[file.content_key] = record
        else:
            todo.append(file)
    profile.cache_hits, profile.cache_misses = sum(r.status == "ok" for r in done.values()), len(todo)
    for file in todo:  # decoded in an earlier run, and removed since (a gc of a store this run shares)
        if not extractor.reads_source and not Path(file.wav).exists():
            raise ArtifactGone("wav", file.content_key, file.wav)
    progress = Progress(extractor.name, profile.shard, files=len(todo), units=sum(map(extractor.work_units, todo)),
                        unit_name=extractor.work_unit_name, path=progress_json, log=logger)
    with ThreadPoolExecutor(max(2, threads), thread_name_prefix=f"{extractor.name}-writer") as writer:
        stored: list[Future] = []
        for file, result in extractor.compute(todo, threads=threads, profile=profile, progress=progress):
            progress.advance(units=0 if extractor.reports_progress else extractor.work_units(file))
            if isinstance(result, Computed):
                stored.append(writer.submit(store_result, extractor, store, file, result, profile))
                continue
            if is_fault(result):
                raise result
            logger.error("%s: %s: %s", extractor.name, file.path, one_line(result))
            done[file.content_key] = ExtractRecord(file.content_key, "error", error=f"{extractor.name}: "
                                                   f"{one_line(result)}")
        for future in stored:
            record = future.result()
            done[record.content_key] = record
    records = [done.get(f.content_key) or ExtractRecord(f.content_key, "error", error=f"{extractor.name}: no result")
               for f in files]
    profile.files = sum(f.ok for f in files)
    profile.failed = sum(r.status == "error" for r in records)
    profile.audio_seconds += sum(f.duration_s for f, r in zip(files, records) if r.status == "ok")
    progress.finish()
    return records


def lookup(extractor: Extractor, store: ArtifactStore, file: DecodeRecord,
           kept: ExtractRecord | None) -> ExtractRecord | None:
    """The record of a file whose artifact is in the store, else None. An ``inline_block`` extractor's block
    comes from ``kept`` (the shard's previous record) when it names this very artifact."""
    key = extractor.key(file.content_key)
    found = store.get(key) if key is not None else None
    if found is None:
        return None
    if kept is not None and (kept.artifact, kept.artifact_digest) != (str(found.path), found.digest):
        kept = None
    block = extractor.block(store, file.content_key, found, kept=kept.block if kept else None) \
        if extractor.inline_block else None
    return _ok_record(extractor, file, found, block, cache_hit=True)


def store_result(extractor: Extractor, store: ArtifactStore, file: DecodeRecord, computed: Computed,
                 profile: JobProfile) -> ExtractRecord:
    """Store one computed artifact and return its record (the block from the arrays in hand, as a cache hit
    builds it from the stored ones)."""
    with profile.timer("write"):
        stored = store.put(extractor.key(file.content_key), computed.payload, computed.meta)
    block = extractor.block(store, file.content_key, stored, arrays=computed.arrays) if extractor.inline_block \
        else None
    return _ok_record(extractor, file, stored, block, cache_hit=False)


def _ok_record(extractor: Extractor, file: DecodeRecord, stored: StoredArtifact, block: dict | None, *,
               cache_hit: bool) -> ExtractRecord:
    return ExtractRecord(file.content_key, "ok", artifact=str(stored.path), artifact_digest=stored.digest,
                         seconds=stored.meta.get("seconds", 0.0), cache_hit=cache_hit,
                         extractor=extractor.identity(), block=block)


def _previous_records(path: str | None) -> dict[str, ExtractRecord]:
    """The ok records of a shard's previous table by content key; empty when there is none or it is damaged
    (each is checked against the store before use, so a stale one is only a missed shortcut)."""
    if not path:
        return {}
    try:
        return {r["content_key"]: ExtractRecord.from_dict(r) for r in read_jsonl(path) if r.get("status") == "ok"}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the previous table %s (%s)", path, one_line(exc))
        return {}
