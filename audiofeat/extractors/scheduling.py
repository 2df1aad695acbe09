"""How many threads a shard job claims from Snakemake: no more than it has pieces of work.

Snakemake-specific glue kept out of the Snakefile so that it is testable without a run.
"""
from __future__ import annotations

from ..config.settings import Settings
from .base import Extractor
from .decode import DecodeExtractor


def pending_work(extractor: Extractor, table: str, settings: Settings) -> int:
    """Independent pieces of work a shard job of ``extractor`` has: inputs to decode (the decoder, from the
    shard's inventory table), or for another extractor the work units (files, CLAP windows) of the decoded files
    whose artifact is not in the store (from the shard's decode table). Reads tables and stats; never hashes.

    Raises FileNotFoundError while ``table`` is not written yet.
    """
    from ..inputs.inventory import read_tsv
    from ..store.tables import DecodeRecord, read_table
    from .runner import open_store

    store = open_store(settings)

    def missing(content_key: str) -> bool:
        key = extractor.key(content_key)  # None while the identity is not known: everything is missing
        return key is None or not (store.reuse and store.path(key).exists())

    if isinstance(extractor, DecodeExtractor):
        return sum(missing(row["content_key"]) for row in read_tsv(table))
    return sum(extractor.work_units(f) for f in read_table(table, DecodeRecord) if f.ok and missing(f.content_key))


def shard_job_threads(extractor: Extractor, table: str, settings: Settings, max_threads: int) -> int:
    """Threads a shard job claims: ``max_threads``, but no more than it has pieces of work (at least one).

    After a few files are added to a finished run, a shard job finds all but a few artifacts in the store; a
    claim of all the cores would make Snakemake run the shard's jobs (and the other shards') one after the
    other, each mostly waiting on its own start-up. Snakemake evaluates this when the job's input is written
    (asking again before it schedules the job); before that, the full claim stands.
    """
    try:
        pending = pending_work(extractor, table, settings)
    except FileNotFoundError:  # the table is not written yet (our jobs write whole tables, atomically)
        return max_threads
    return max(1, min(max_threads, pending))
