"""Inventory: find the inputs, give each its content key, and plan shards.

Content key: BLAKE2b-128 of the file's bytes (hashlib, no extra dependency). A stat index (SQLite, keyed by
path; holds size, mtime_ns, inode and ctime_ns) avoids rehashing unchanged files; a file whose stat changed is
rehashed. The shard tables carry the stat each key was hashed under, so that the decode job decodes only bytes that are
still the key's.

Paths are ``str`` as Python's ``os`` functions give them: bytes that are not UTF-8 are lone surrogates
(``surrogateescape``), written to the tables as the original bytes.

Shards group unique content keys into jobs. A key's shard is chosen by its hash bits, with a power-of-two
shard count derived from the targets ``shard.target_files`` and ``shard.target_audio_seconds``: adding a file
changes one shard only, so a rerun after adding files redoes one shard job per stage, not all of them.

A shard's paths are cut by count as well: when more than ``shard.target_files`` paths share its contents (a
million copies of a thousand clips), they are split by their hash into path groups (``<shard>.g<count>-<k>``) of at most
that many, each with its own parts and index, assembled one after another by the shard's assembly job, while the
shard's contents are still computed once.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import sqlite3
import stat
import sys
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..store.artifacts import atomic_write_bytes, atomic_write_text, blake2b_file

logger = logging.getLogger(__name__)

MEDIA_EXTENSIONS = frozenset(
    "wav flac mp3 ogg oga opus m4a aac wma aif aiff aifc au snd caf mka ac3 eac3 amr wv ape spx mp2 "
    "mp4 m4v mkv webm mov avi mpg mpeg ts mts m2ts flv wmv 3gp 3g2 ogv vob".split()
)


@dataclass(frozen=True, slots=True)  # slots: a million of them are in memory during an inventory
class InputFile:
    """One input path and what the inventory knows of it."""

    path: str  # absolute path
    # The path the manifest mirrors, relative to results/manifests (:attr:`relpath`); where it is the end of
    # ``path``, where it starts there: one string per input, not two (a million relpaths are 70 MB).
    rel: str | int
    size_bytes: int
    content_key: str  # "" when the file cannot be read
    duration_s: float  # container's declared duration, 0 when unknown
    error: str = ""
    stat: str = ""  # input_signature() when it was hashed
    hashed: bool = False  # hashed by this run (new or changed), not found in the stat index

    @property
    def relpath(self) -> str:
        return self.path[self.rel:] if isinstance(self.rel, int) else self.rel


def _rel_field(path: str, rel: str) -> str | int:
    """What :attr:`InputFile.rel` holds for ``rel``: where it starts in ``path`` when it is its end."""
    return len(path) - len(rel) if rel and path.endswith(os.sep + rel) else rel


def path_text(path: str) -> str:
    """``path`` as valid UTF-8 text for JSON, logs and the report: unchanged when its bytes are UTF-8, else each
    byte that is not written ``\\xNN`` (``latin1_\\xe9t\\xe9.wav``). The exact bytes go in ``path_bytes``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def input_signature(st: os.stat_result) -> str:
    """What says an input's bytes may have changed: size, mtime, inode and ctime (an in-place rewrite, a copy
    over it and a restored mtime all change one of them)."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def iter_inputs(input_dir: str, input_list: str) -> Iterator[tuple[str, str]]:
    """The configured inputs' ``(absolute path, relpath)``, each once, streamed in a fixed order: ``input_dir``'s
    files (a folder's sorted names, its subfolders sorted) first, then the rest of ``input_list``'s, sorted.

    ``input_dir`` is walked recursively for files with a media extension (a folder that cannot be listed is
    logged as a warning and left out); ``input_list`` names one path per line
    (blank lines and ``#`` comments ignored; relative paths are relative to the list's folder) and takes any file.
    A path both name has ``input_dir``'s relpath. Memory follows the list, not the folder's files.
    """
    listed = _listed_inputs(input_list) if input_list else {}
    if input_dir:
        root = Path(input_dir).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"input_dir {input_dir!r} is not a folder")
        prefix = os.path.join(str(root), "")  # every walked path starts with it: a slice, not os.path.relpath
        for dirpath, dirnames, filenames in os.walk(root, onerror=_warn_unlisted):
            dirnames.sort()
            for name in sorted(filenames):
                if name.rsplit(".", 1)[-1].lower() in MEDIA_EXTENSIONS and not name.startswith("."):
                    full = os.path.join(dirpath, name)
                    listed.pop(full, None)
                    yield full, full[len(prefix):]
    yield from sorted(listed.items())


def _listed_inputs(input_list: str) -> dict[str, str]:
    """``{absolute path: relpath}`` of a list file's entries."""
    found: dict[str, str] = {}
    list_path = Path(input_list).resolve()
    for line in list_path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():  # paths as bytes
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        full = str((list_path.parent / entry).resolve()) if not os.path.isabs(entry) else os.path.normpath(entry)
        try:
            rel = os.path.relpath(full, list_path.parent)
        except ValueError:
            rel = full
        if rel.startswith(".."):
            rel = full.lstrip(os.sep)
        found.setdefault(full, rel)
    return found


def _warn_unlisted(exc: OSError) -> None:
    """A folder the walk cannot list (no permission, say) is named in the log, not skipped in silence."""
    logger.warning("inventory: cannot list folder %s (%s); the files in it are left out", exc.filename,
                   exc.strerror or exc)


def input_fingerprint(input_dir: str, input_list: str) -> str:
    """Digest of every input's path and stat (:func:`input_signature`), and of the list file's.

    Adding, removing, renaming or rewriting a file (in place or by a copy over it) changes it, so Snakemake reruns
    the inventory, which rehashes only the files whose stat changed. It runs at every workflow start, in
    Snakemake's process (the walk and one ``stat`` per file; measurements in docs/benchmarks.md).
    """
    digest = hashlib.blake2b(digest_size=16)
    if input_list and os.path.exists(input_list):
        digest.update(os.fsencode(os.path.abspath(input_list)) + input_signature(os.stat(input_list)).encode())
    try:
        for path, _rel in iter_inputs(input_dir, input_list):
            try:
                signature = input_signature(os.stat(path))
            except OSError as exc:
                signature = f"error {exc.errno}"
            digest.update(os.fsencode(path) + b"\0" + signature.encode() + b"\n")
    except OSError:  # no such folder, an unreadable list (before any input): the inventory names the problem
        pass
    return digest.hexdigest()


class StatIndex:
    """SQLite map ``path -> (stat signature, content_key, duration_s)``; safe for concurrent processes.

    Paths are stored as their bytes (a BLOB), so names that are not UTF-8 are kept as they are.
    """

    def __init__(self, db_path: str | os.PathLike) -> None:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(db_path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        # v2: ctime joined the signature and paths became bytes; the v1 table of older runs is left unread.
        self.db.execute("CREATE TABLE IF NOT EXISTS files_v2 (path BLOB PRIMARY KEY, signature TEXT, "
                        "content_key TEXT, duration_s REAL)")
        self.rehashed = 0

    def lookup(self, path: str, st: os.stat_result) -> tuple[str, float] | None:
        row = self.db.execute("SELECT content_key, duration_s FROM files_v2 WHERE path=? AND signature=?",
                              (os.fsencode(path), input_signature(st))).fetchone()
        return (row[0], row[1]) if row else None

    def store(self, rows: Iterable[tuple[str, str, str, float]]) -> None:
        """Remember ``(path, signature, content key, duration)`` rows."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO files_v2 VALUES (?, ?, ?, ?)",
                                ((os.fsencode(p), sig, key, dur) for p, sig, key, dur in rows))

    def close(self) -> None:
        self.db.close()


def declared_duration(path: str) -> float:
    """Duration the container declares (seconds), from its header; 0 when unknown or unreadable (the decode job
    stage reports why)."""
    from .media import DecodeError, probe

    try:
        return probe(path).duration_s
    except (DecodeError, OSError, ValueError):
        return 0.0


def _hash_new(item: tuple[str, str]) -> tuple[InputFile, tuple | None]:
    """Hash one input. A file whose stat changes while it is hashed (still being copied) keeps the stat from
    before, so the decode job refuses it as changed, and is not remembered, so the next run hashes it again."""
    path, rel = item
    try:
        before = os.stat(path)
        key = blake2b_file(path)
        after = os.stat(path)
    except OSError as exc:
        return InputFile(path, rel, 0, "", 0.0, f"cannot read file: {exc.strerror}"), None
    duration = declared_duration(path) if before.st_size else 0.0
    signature = input_signature(before)
    record = InputFile(path, rel, before.st_size, key, duration, stat=signature, hashed=True)
    if input_signature(after) != signature:
        logger.warning("inventory: %a changed while it was hashed; the decode job will ask for a rerun", path)
        return record, None
    return record, (path, signature, key, duration)


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def identify_inputs(items: Iterable[tuple[str, str]], index: StatIndex | None, threads: int = 4) -> list[InputFile]:
    """Content key and declared duration of every input, rehashing only files whose stat changed."""
    # SQLite connections belong to one thread: look up here, hash new files in the pool.
    records: list = []  # InputFile, or the (path, relpath) of one waiting for its inode's hash
    seen: dict[str, tuple[int, float]] = {}  # content key -> its first path's size and duration
    to_hash: dict[tuple[int, int], array] = {}  # positions by inode (8 bytes each): hard links hashed once
    for path, relpath in items:
        rel = _rel_field(path, relpath)
        try:
            st = os.stat(path)
        except OSError as exc:
            records.append(InputFile(path, rel, 0, "", 0.0, f"cannot read file: {exc.strerror}"))
            continue
        if not stat.S_ISREG(st.st_mode):  # reading a pipe blocks, a device may never end: never opened
            records.append(InputFile(path, rel, 0, "", 0.0, f"not a regular file ({_file_kind(st.st_mode)})"))
            continue
        cached = index.lookup(path, st) if index else None
        if cached:
            # A key shared by many paths is one string; only its first path keeps a stat (the shard tables hold
            # the first path's, checked before decoding): a million stat strings are 90 MB.
            key = sys.intern(cached[0])
            first = key not in seen
            if first:
                seen[key] = (st.st_size, cached[1])
            size, duration = seen[key] if seen[key][0] == st.st_size else (st.st_size, cached[1])  # shared objects
            records.append(InputFile(path, rel, size, key, duration, stat=input_signature(st) if first else ""))
        else:
            to_hash.setdefault((st.st_dev, st.st_ino), array("q")).append(len(records))
            records.append((path, rel))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        hashed = list(pool.map(lambda positions: _hash_new(records[positions[0]]), to_hash.values()))
    remembered = []
    for positions, (record, row) in zip(to_hash.values(), hashed):
        for position in positions:  # every name of the inode: the same bytes, the same stat
            path, rel = records[position]
            records[position] = dataclasses.replace(record, path=path, rel=rel)
            if row and index:
                remembered.append((path, *row[1:]))
                if len(remembered) == 10_000:  # a batch at a time: a million rows are 80 MB
                    remembered = _remember(index, remembered)
    if index:
        _remember(index, remembered)
    return records


def _remember(index: StatIndex, rows: list[tuple]) -> list:
    """Store ``rows`` in the stat index; returns an empty batch."""
    if rows:
        index.store(rows)
        index.rehashed += len(rows)
    return []


def shard_count(n_files: int, total_seconds: float, target_files: int, target_audio_seconds: float) -> int:
    """Smallest power of two giving at most the target files and audio seconds per shard on average."""
    need = max(1, math.ceil(n_files / target_files), math.ceil(total_seconds / target_audio_seconds))
    return 1 << (need - 1).bit_length()


def shard_of(content_key: str, n_shards: int) -> int:
    return int(content_key[:12], 16) % n_shards


def plan_shards(files: list[InputFile], target_files: int, target_audio_seconds: float) -> dict[str, list[InputFile]]:
    """Map shard name -> unique-content inputs (first path of each content key), skipping empty shards."""
    unique: dict[str, InputFile] = {}
    for record in files:
        if record.content_key and record.content_key not in unique:
            unique[record.content_key] = record
    total = sum(r.duration_s for r in unique.values())
    n_shards = shard_count(len(unique), total, target_files, target_audio_seconds)
    shards: dict[str, list[InputFile]] = {}
    width = max(3, len(str(n_shards - 1)))
    for key in sorted(unique):
        name = f"n{n_shards}-{shard_of(key, n_shards):0{width}d}"
        shards.setdefault(name, []).append(unique[key])
    return shards


def path_groups(shard: str, records: list[InputFile], target_files: int) -> dict[str, list[InputFile]]:
    """A shard's paths as assembly groups of at most ``target_files`` paths: ``{shard: records}`` when they fit,
    else ``{<shard>.g<count>-<k>: ...}`` over the smallest power of two of groups, picked by each path's hash,
    whose largest group fits (a power of two, so that growing the shard moves few paths)."""
    import numpy as np

    if len(records) <= target_files:
        return {shard: records}
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b(os.fsencode(r.path), digest_size=8).digest(), "big")
                          for r in records), dtype=np.uint64, count=len(records))
    count = 1 << (math.ceil(len(records) / target_files) - 1).bit_length()
    while np.bincount((hashes % np.uint64(count)).astype(np.int64), minlength=count).max() > target_files:
        count *= 2
    group_of = (hashes % np.uint64(count)).astype(np.int64)
    order = np.argsort(group_of, kind="stable")
    edges = np.searchsorted(group_of[order], np.arange(count + 1))
    # The count in the name, as in a shard's: a group of another partition never takes an old group's index.
    width = len(str(count - 1))
    return {f"{shard}.g{count}-{k:0{width}d}": [records[i] for i in order[edges[k]:edges[k + 1]].tolist()]
            for k in range(count) if edges[k + 1] > edges[k]}


def content_shard(group: str) -> str:
    """The shard whose contents a path group's paths have (:func:`path_groups`)."""
    return group.partition(".")[0]


FILES_COLUMNS = ("path", "relpath", "size_bytes", "content_key", "duration_s", "error")
SHARD_COLUMNS = ("content_key", "path", "duration_s", "stat")


def write_tsv(path: str | os.PathLike, columns: tuple[str, ...], rows: Iterable) -> str:
    """Write rows (dicts, or records with those attributes) as a tab-separated table (atomic), a batch of rows at
    a time (a million rows are never one string); returns the BLAKE2b-128 digest of its bytes."""
    import io

    digest = hashlib.blake2b(digest_size=16)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")

    def taken() -> bytes:
        data = buffer.getvalue().encode("utf-8", "surrogateescape")  # a path's bytes, as the filesystem has them
        buffer.seek(0)
        buffer.truncate()
        digest.update(data)
        return data

    def batches() -> Iterator[bytes]:
        writer.writeheader()
        for count, row in enumerate(rows, 1):
            writer.writerow(row if isinstance(row, dict) else {c: getattr(row, c) for c in columns})
            if count % 10_000 == 0:
                yield taken()
        yield taken()

    atomic_write_bytes(path, batches())
    return digest.hexdigest()


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_inventory(out_dir: str, files: list[InputFile], shards: dict[str, list[InputFile]],
                    state_path: str | os.PathLike, *, target_files: int) -> None:
    """Write ``files.tsv``; per shard, ``shards/<name>.tsv`` (its unique contents, the extractors' input) and
    ``paths/<name>.tsv`` (every path whose content is in it, for its manifests and dataset part; split into
    :func:`path_groups` beyond ``target_files`` paths); and ``errors.tsv`` (the inputs that could not be hashed).

    A table whose content did not change keeps its previous mtime (remembered in ``state_path``), so Snakemake
    does not rerun the jobs that read it after the inventory itself reran.
    """
    out = Path(out_dir)
    for folder in ("shards", "paths"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_tsv(out / "files.tsv", FILES_COLUMNS, files)
    try:
        state = json.loads(Path(state_path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        state = {}
    shard_of_key = {r.content_key: name for name, records in shards.items() for r in records}
    paths: dict[str, list[InputFile]] = {name: [] for name in shards}
    for record in files:
        if record.content_key in shard_of_key:
            paths[shard_of_key[record.content_key]].append(record)
    tables = {f"shards/{name}.tsv": (SHARD_COLUMNS, records) for name, records in shards.items()}
    for name, records in paths.items():
        tables.update({f"paths/{group}.tsv": (FILES_COLUMNS, sorted(members, key=lambda r: r.path))
                       for group, members in path_groups(name, records, target_files).items()})
    tables["errors.tsv"] = (FILES_COLUMNS, [r for r in files if not r.content_key])
    new_state = {name: _write_keeping_mtime(out / name, columns, records, state.get(name))
                 for name, (columns, records) in tables.items()}
    for name in set(state) - set(new_state):  # tables of shards the inputs no longer fill
        (out / name).unlink(missing_ok=True)
    atomic_write_text(state_path, json.dumps(new_state, sort_keys=True))


def _write_keeping_mtime(path: Path, columns: tuple[str, ...], records: list, previous: list | None) -> list:
    """Write a table; give it back its previous mtime when its digest is the one ``previous`` remembers.
    Returns ``[digest, mtime_ns]`` to remember."""
    digest = write_tsv(path, columns, records)
    if previous and previous[0] == digest:
        os.utime(path, ns=(previous[1], previous[1]))
    return [digest, path.stat().st_mtime_ns]


def too_long(record: InputFile, max_hours: float) -> InputFile:
    """``record``, or its verdict when its header declares more than ``max_hours`` (0: no limit); the decode job
    enforces the limit again as it decodes, for headers that lie."""
    if not max_hours or record.error or record.duration_s <= max_hours * 3600:
        return record
    return dataclasses.replace(record, content_key="", error=f"longer than audio.max_hours ({max_hours:g} h): "
                                                             f"{record.duration_s / 3600:.3g} h declared")


def run_inventory(input_dir: str, input_list: str, out_dir: str, *, index_path: str, state_path: str,
                  target_files: int, target_audio_seconds: float, max_hours: float = 0.0, threads: int = 4) -> dict:
    """Scan, identify and shard the inputs; returns counts for the log."""
    index = StatIndex(index_path)
    try:
        files = [too_long(f, max_hours) for f in identify_inputs(iter_inputs(input_dir, input_list), index, threads)]
        rehashed = index.rehashed
    finally:
        index.close()
    shards = plan_shards(files, target_files, target_audio_seconds)
    write_inventory(out_dir, files, shards, state_path, target_files=target_files)
    # Contents this run hashed (new or changed files) are what it will decode: the store's growth, roughly.
    known = {f.content_key for f in files if not f.hashed}
    new = [r for records in shards.values() for r in records if r.content_key not in known]
    return {"files": len(files), "unique": sum(len(v) for v in shards.values()), "shards": len(shards),
            "rehashed": rehashed, "unreadable": sum(1 for f in files if f.error),
            "new_files": len(new), "new_audio_s": sum(r.duration_s for r in new)}
