"""A shard's assembly: its inputs' manifests and its Parquet parts, redone only where something changed.

Each input (row) gets a *signature*: a digest of its inventory row and of its records in the shard's tables.
Each path group's index (a shard whose paths fit one group is its own) keeps, per row, the signature, its
manifest's digest and what its summary needs (status, cost, error). A rerun builds manifests only for rows whose
signature changed, writes only those whose bytes changed, and rewrites only the parts
(``dataset/<group>-<k>.parquet``, about ``PART_ROWS`` rows each, a row's part
picked by its path: :mod:`.partition`) that hold a changed, added or removed row, keeping the other rows of such a
part from its previous file. Adding one file to 100,000 paths is one manifest and one part of 1,000 to 2,000 rows,
not 100,000; and a shard is assembled a part at a time, so memory follows a part, not the shard's paths.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..config.settings import FlagsSettings
from ..faults import ArtifactGone, Fault
from ..inputs.inventory import path_text
from ..store.artifacts import atomic_write_bytes, atomic_write_text, blake2b_bytes
from ..store.tables import json_line, read_jsonl
from .curation import CurationCounts, input_flags, main_numbers
from .dataset import manifest_row, part_digest, part_schema, write_part
from .manifest import build_manifest
from .partition import INDEX_FORMAT, IndexWriter, count_rows, part_count, read_part, split_by_part

FAILURES_LISTED_PER_CAUSE = 50
# Per-file cost histogram bins (seconds, log-spaced, 4 per decade from 1 ms): shards' counts add up.
COST_BINS = tuple(10 ** (k / 4) for k in range(-12, 17))
SLOWEST_KEPT = 10
BUILD_ROWS = 256  # manifests built as dicts (~100 KB each) at a time, however many rows a part holds


def read_shard_tables(tables: dict[str, list[str]]) -> dict[str, dict[str, dict]]:
    """``{stage: {content key: record}}`` from every shard's table (``decode`` and each extractor's)."""
    by_stage: dict[str, dict[str, dict]] = {}
    for stage, paths in tables.items():
        table = by_stage[stage] = {}
        for path in paths:
            for record in read_jsonl(path):
                table[record["content_key"]] = record
    return by_stage


# Record fields no manifest shows: a rerun that finds a file's artifacts in the store rewrites its records with
# them, and must not make its row look changed.
_NOT_IN_MANIFESTS = ("cache_hit",)


def row_signatures(rows: list[dict], by_stage: dict[str, dict[str, dict]], extractors: list[str], *,
                   write_manifests: bool = True, flags: FlagsSettings = FlagsSettings(),
                   record_digest: dict[str, bytes] | None = None) -> list[str]:
    """Each row's signature: what its manifest is made of (its inventory row, its records, the extractors),
    whether it is written as a file, and the thresholds its flags are judged by. ``record_digest``: each content
    key's records' digest, filled here; pass the same dict for every part of a shard (its path groups share its
    contents: 1,000 digests, not one per row)."""
    record_digest = {} if record_digest is None else record_digest
    header = json.dumps([INDEX_FORMAT, extractors, write_manifests, flags.to_dict()], sort_keys=True).encode()
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


def assemble_shard(groups: dict[str, str], tables: dict[str, str], extractors: dict, *, shard: str,
                   manifests_dir: str, dataset_dir: str, summary_path: str, index_dir: str,
                   write_manifests: bool = True, flags: FlagsSettings = FlagsSettings(), workers: int = 1) -> dict:
    """Bring a shard's manifests and Parquet parts up to date with its inventory rows and its tables
    (``{stage: path}``); write and return its summary. ``groups``: ``{name: paths table}``, the shard's path groups
    (:func:`~audiofeat.inputs.inventory.path_groups`; the shard itself when its paths fit one), each with its own
    parts and index (``<index_dir>/<name>.index.json``), assembled by ``workers`` processes (forked), each taking
    runs of consecutive groups: a group whose rows did not change costs a read of its table and index. One part at
    a time: memory follows a part's rows per worker, not the shard's paths. Without ``write_manifests``
    (``outputs.manifests: none``) the manifests are the dataset's rows only, and the shard's manifest files are
    removed. ``flags``: the thresholds of each row's flags (:mod:`.curation`)."""
    by_stage = read_shard_tables({stage: [path] for stage, path in tables.items()})
    job = _PartJob(by_stage, extractors, tables, Path(manifests_dir), Path(dataset_dir), write_manifests, flags)
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    items = list(groups.items())
    if workers > 1 and len(items) > 1:
        n = min(len(items), 4 * workers)  # runs of consecutive groups, a few per worker: balanced, in order
        runs = [items[k * len(items) // n: (k + 1) * len(items) // n] for k in range(n)]
        done = _in_workers(job, runs, Path(index_dir), workers)
    else:
        done = [_assemble_groups(job, items, Path(index_dir))]
    summary, part_list, written = job.new_summary(), [], 0
    for run_parts, count, run_summary in done:  # in the groups' order, as one process would have added them
        part_list += run_parts
        written += count
        summary.merge(run_summary)
    _remove_other_groups(Path(index_dir), shard, set(groups))
    result = {**summary.to_dict(), "parts": part_list, "manifests_written": written}
    atomic_write_text(summary_path, json.dumps(result, ensure_ascii=False))
    return result


def _assemble_groups(job: "_PartJob", run: list[tuple[str, str]], index_dir: Path):
    """Consecutive path groups (``[(name, paths table)]``): their part records, manifests written and summary."""
    summary, part_list, written = job.new_summary(), [], 0
    for group, paths_tsv in run:
        group_parts, count = _assemble_group(paths_tsv, job, summary, group=group,
                                             index_path=index_dir / f"{group}.index.json")
        part_list += group_parts
        written += count
    return part_list, written, summary


_FORKED_JOB = None  # the parent's _PartJob while its workers run: inherited by fork, never pickled


def _forked(run: list[tuple[str, str]], index_dir: Path):
    return _assemble_groups(_FORKED_JOB, run, index_dir)


def _in_workers(job: "_PartJob", runs: list, index_dir: Path, workers: int) -> list:
    """:func:`_assemble_groups` of each run in forked processes, results in the runs' order. A worker killed (by
    the kernel's OOM killer, most likely) is a fault of the machine, not a file's result."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _FORKED_JOB
    _FORKED_JOB = job
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_forked, runs, [index_dir] * len(runs)))
    except BrokenProcessPool:
        raise Fault("a worker of the shard's assembly was killed (out of memory?); lower perf.threads or free "
                    "memory, then rerun the same command") from None
    finally:
        _FORKED_JOB = None


def _assemble_group(paths_tsv: str, job: "_PartJob", summary: "ShardSummary", *, group: str,
                    index_path: Path) -> tuple[list[dict], int]:
    """One path group's parts (``<group>-<k>``), a part at a time; its rows are added to ``summary``. Returns its
    part records and how many manifests were written."""
    parts = part_count(count_rows(paths_tsv))
    with tempfile.TemporaryDirectory(prefix=f".{group}.", dir=index_path.parent) as tmp:
        folder = Path(tmp)
        previous = split_by_part(paths_tsv, index_path, parts, folder)
        kept = {p["name"]: p for p in previous.part_list} if previous.parts == parts else {}
        if previous.parts != parts:  # re-partitioned: the old parts go
            for old in previous.part_list:
                (job.dataset / f"{old['name']}.parquet").unlink(missing_ok=True)
        index, part_list, written = IndexWriter(index_path, folder, parts), [], 0
        for k in range(parts):
            rows, old = read_part(folder, k)
            entries, part, count = job.assemble(rows, old, f"{group}-{k:04d}", kept.get(f"{group}-{k:04d}"))
            index.add(entries, part)
            part_list += [part] if part else []
            written += count
            summary.add(rows, entries)
        index.commit()
    return part_list, written


def _remove_other_groups(folder: Path, shard: str, groups: set[str]) -> None:
    """Remove the indexes of the shard's path groups of an earlier partition, and the per-group summaries that
    earlier versions wrote (their parts go at the run's end, as every part no summary lists)."""
    for path in folder.glob(f"{shard}.g*.json"):
        name = path.name[: -len(".json")]
        if not name.endswith(".index") or name[: -len(".index")] not in groups:
            path.unlink(missing_ok=True)


@dataclass
class _PartJob:
    """What assembling each part of a shard needs: the shard's records, the extractors, where things go."""

    by_stage: dict
    extractors: dict
    tables: dict
    root: Path
    dataset: Path
    write_manifests: bool
    flags: FlagsSettings
    record_digest: dict = field(default_factory=dict)  # by content key, for every part (row_signatures)

    def new_summary(self) -> "ShardSummary":
        """An empty summary, listing the manifests' paths when they are written."""
        return ShardSummary(self.root.name if self.write_manifests else None)

    def assemble(self, rows: list[dict], old: dict[str, list], name: str, kept: dict | None):
        """One part: build the manifests of its changed rows, remove those of rows gone, rewrite its file when
        anything changed. Returns its index entries, its part record (None when it has no rows) and how many
        manifests were written."""
        path = self.dataset / f"{name}.parquet"
        signatures = row_signatures(rows, self.by_stage, list(self.extractors), write_manifests=self.write_manifests,
                                    flags=self.flags, record_digest=self.record_digest)
        lost = kept is None or not path.exists()  # rebuilt whole: every row built again
        changed = [i for i, row in enumerate(rows) if lost or old.get(row["relpath"], [None])[0] != signatures[i]]
        relpaths = {row["relpath"] for row in rows}
        removed = [relpath for relpath in old if relpath not in relpaths]
        for relpath in removed:
            _remove_if_ours(self.root / f"{relpath}.json", old[relpath][1])
        built, new_tables, written = {}, [], 0
        for start in range(0, len(changed), BUILD_ROWS):  # manifests as dicts, a chunk at a time
            chunk, new_rows, count = _update_manifests(rows, changed[start:start + BUILD_ROWS], signatures, self, old)
            built.update(chunk)
            new_tables.append(_rows_table(new_rows, chunk, self.extractors))
            written += count
        entries = {row["relpath"]: built.get(row["relpath"]) or old[row["relpath"]] for row in rows}
        if not rows:
            path.unlink(missing_ok=True)
            return entries, None, written
        if changed or removed or lost:
            kept_paths = [path_text(row["path"]) for row in rows if row["relpath"] not in built]
            _rewrite_part(path, kept_paths, new_tables, self.extractors)
            return entries, {"name": name, "rows": len(rows), "digest": part_digest(path)}, written
        return entries, kept, written


def _update_manifests(rows, changed, signatures, job: _PartJob, previous: dict):
    """Build the ``changed`` rows' manifests and write those whose bytes changed (or are missing); without
    ``job.write_manifests``, remove the files of theirs written before. Returns their index entries and manifests
    as dicts (both by relpath), and how many were written."""
    try:
        built = {i: build_manifest(rows[i], job.by_stage, list(job.extractors)).to_dict() for i in changed}
    except ArtifactGone as gone:
        Path(job.tables[gone.stage]).unlink()  # the same command then recomputes what the table held
        raise Fault(f"{gone}; its shard's {gone.stage} table was removed: rerun the same command") from None
    entries, new_rows, written = {}, {}, 0
    for i, manifest in built.items():
        relpath = rows[i]["relpath"]
        line = json_line(manifest)
        parsed = new_rows[relpath] = orjson.loads(line)  # stored blocks arrive unparsed: parsed once, here
        entry = entries[relpath] = _index_entry(signatures[i], blake2b_bytes(line), parsed, job.flags)
        path = job.root / f"{relpath}.json"
        if not job.write_manifests:
            if relpath in previous:
                _remove_if_ours(path, previous[relpath][1])
        elif previous.get(relpath, [None, None])[1] != entry[1] or not path.exists():
            atomic_write_bytes(path, line, durable=False)  # derived: rewritten by the next run if lost
            written += 1
    return entries, new_rows, written


def _index_entry(signature: str, digest: str, manifest: dict, flags: FlagsSettings) -> list:
    """``[signature, manifest digest, status, cost in seconds, error, flags, main numbers]``: what the summary
    needs of a row."""
    return [signature, digest, manifest["status"], round(sum(manifest.get("timings", {}).values()), 6),
            manifest.get("error"), input_flags(manifest, flags), main_numbers(manifest)]


def _remove_if_ours(path: Path, digest: str) -> None:
    """Remove a manifest the shard wrote, unless another shard has rewritten it since (its content changed)."""
    try:
        if blake2b_bytes(path.read_bytes()) == digest:
            path.unlink()
    except FileNotFoundError:
        pass


def _rows_table(new_rows: dict, entries: dict, extractors: dict):
    """Rebuilt rows (manifest dicts by relpath) as a part's columns, with their flags from their index entries."""
    import pyarrow as pa

    return pa.Table.from_pylist([{**manifest_row(manifest, extractors), "flags": entries[relpath][5]}
                                 for relpath, manifest in new_rows.items()], schema=part_schema(extractors))


def _rewrite_part(path: Path, kept_paths: list[str], new_tables: list, extractors: dict) -> None:
    """A part's rows sorted by path: the rebuilt ones (``new_tables``) and those of ``kept_paths`` from its previous
    file (one of the two is not empty: the part has rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = part_schema(extractors)
    tables = list(new_tables)
    if kept_paths:
        old = pq.read_table(path, schema=schema)
        tables.insert(0, old.filter(pc.is_in(old["path"], value_set=pa.array(kept_paths))))
    write_part(path, pa.concat_tables(tables).sort_by("path"))


class ShardSummary:
    """A shard's summary, a part's rows at a time: counts, failures by cause (the first files of each, with their
    manifests' paths in ``manifests_folder`` when they are written), failed files, the slowest files and the
    per-file cost histogram, from the rows' index entries (no manifest is read)."""

    def __init__(self, manifests_folder: str | None) -> None:
        self.manifests_folder = manifests_folder
        self.rows = 0
        self.histogram = [0] * (len(COST_BINS) + 1)
        self.slowest: list[tuple[float, str]] = []  # a heap of the SLOWEST_KEPT costliest
        self.causes: dict[str, dict] = {}
        self.failed: list[str] = []
        self.curation = CurationCounts()

    def add(self, rows: list[dict], entries: dict[str, list]) -> None:
        for row in rows:
            _signature, _digest, status, cost, error, flags, numbers = entries[row["relpath"]]
            path = path_text(row["path"])
            self.curation.add(flags, numbers, self._listed(row, path))
            self.rows += 1
            self.histogram[bisect.bisect(COST_BINS, cost)] += 1
            heapq.heappush(self.slowest, (cost, path))
            if len(self.slowest) > SLOWEST_KEPT:
                heapq.heappop(self.slowest)
            if status == "error":
                self._failure(row, path, error)

    def merge(self, other: "ShardSummary") -> None:
        """Add another's rows (a worker's groups), as if they had been added here after this one's."""
        self.rows += other.rows
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram)]
        for item in other.slowest:
            heapq.heappush(self.slowest, item)
            if len(self.slowest) > SLOWEST_KEPT:
                heapq.heappop(self.slowest)
        for cause, group in other.causes.items():
            mine = self.causes.setdefault(cause, {"count": 0, "files": []})
            mine["count"] += group["count"]
            mine["files"] += group["files"][:FAILURES_LISTED_PER_CAUSE - len(mine["files"])]
        self.failed += other.failed
        self.curation.merge(other.curation.to_dict())

    def _failure(self, row: dict, path: str, error: str) -> None:
        self.failed.append(path)
        group = self.causes.setdefault(error.split(" (")[0], {"count": 0, "files": []})
        group["count"] += 1
        if len(group["files"]) < FAILURES_LISTED_PER_CAUSE:
            group["files"].append(self._listed(row, path))

    def _listed(self, row: dict, path: str) -> dict:
        """A file as the summary lists it: its path, and its manifest's when manifests are written."""
        if not self.manifests_folder:
            return {"path": path}
        return {"path": path, "manifest": f"{self.manifests_folder}/{path_text(row['relpath'])}.json"}

    def to_dict(self) -> dict:
        return {"rows": self.rows, "ok": self.rows - len(self.failed), "failed": len(self.failed),
                "slowest": [(path, cost) for cost, path in sorted(self.slowest, reverse=True)],
                "cost_histogram": self.histogram,
                "failures": [{"cause": c, "count": g["count"], "files": g["files"],
                              "more": g["count"] - len(g["files"])} for c, g in sorted(self.causes.items())],
                "failed_files": self.failed, **self.curation.to_dict()}
