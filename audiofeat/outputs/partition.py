"""A shard's paths and its assembly index, split by dataset part into temporary files, so that its assembly
holds one part's rows at a time however many paths share the shard's contents (a million copies of a thousand
clips are one shard).

A row's part is picked by its path (:func:`part_of`) among :func:`part_count` parts. The index is JSON lines:
a header ``{"format": .., "parts": n}``, then per part its rows' ``[relpath, entry]`` and a ``{"part": {..}}``
line naming the part's file, rows and digest.
"""
from __future__ import annotations

import csv
import filecmp
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

PART_ROWS = 2048  # over 1,024 rows a part on average: under one file per 1,000 inputs (built a chunk at a time)
INDEX_FORMAT = 4  # bump when what a row's signature covers, or a part's columns, change


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


def count_rows(paths_tsv: str | os.PathLike) -> int:
    """Rows of an inventory table, streamed."""
    with open(paths_tsv, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle, delimiter="\t"))


@dataclass
class PreviousIndex:
    """What a shard's previous index says of its parts: how many, and each part's ``{name, rows, digest}``."""

    parts: int = 0
    part_list: list[dict] = field(default_factory=list)


def split_by_part(paths_tsv: str | os.PathLike, index_path: str | os.PathLike, parts: int,
                  folder: Path) -> PreviousIndex:
    """Write each part's inventory rows (``<k>.rows``) and previous index entries (``<k>.old``, by the new
    partition) into ``folder``, one JSON line each; returns what the previous index says of its parts."""
    handles: dict[tuple[int, str], IO[str]] = {}

    def out(k: int, kind: str) -> IO[str]:
        if (k, kind) not in handles:
            handles[(k, kind)] = open(folder / f"{k}.{kind}", "w", encoding="utf-8")
        return handles[(k, kind)]

    try:
        with open(paths_tsv, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                out(part_of(row["relpath"], parts), "rows").write(json.dumps(row) + "\n")
        previous = PreviousIndex()
        for item in _index_items(index_path):
            if isinstance(item, list):
                out(part_of(item[0], parts), "old").write(json.dumps(item) + "\n")
            elif "parts" in item:
                previous.parts = item["parts"]
            else:
                previous.part_list.append(item["part"])
    finally:
        for handle in handles.values():
            handle.close()
    return previous


def read_part(folder: Path, k: int) -> tuple[list[dict], dict[str, list]]:
    """Part ``k``'s inventory rows (in the table's order) and previous index entries (by relpath)."""
    def lines(kind: str) -> Iterator:
        path = folder / f"{k}.{kind}"
        if path.exists():
            with open(path, encoding="utf-8") as handle:
                yield from (json.loads(line) for line in handle)

    return list(lines("rows")), {relpath: entry for relpath, entry in lines("old")}


def _index_items(index_path: str | os.PathLike) -> Iterator:
    """The previous index's header, rows and part lines; nothing when there is none, or it is of another format
    (every row is then built again)."""
    try:
        handle = open(index_path, encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        try:
            header = json.loads(handle.readline())
        except ValueError:
            return
        if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
            return
        yield header
        yield from (json.loads(line) for line in handle)


class IndexWriter:
    """Writes a shard's new index a part at a time, into a temporary file that :meth:`commit` moves into place."""

    def __init__(self, index_path: str | os.PathLike, folder: Path, parts: int) -> None:
        self.path, self.tmp = Path(index_path), folder / "index.new"
        self.handle = open(self.tmp, "w", encoding="utf-8")
        self.handle.write(json.dumps({"format": INDEX_FORMAT, "parts": parts}) + "\n")

    def add(self, entries: dict[str, list], part: dict | None) -> None:
        """A part's rows' entries (by relpath), and its ``{name, rows, digest}`` (None: the part is empty)."""
        self.handle.writelines(json.dumps([relpath, entry]) + "\n" for relpath, entry in entries.items())
        if part is not None:
            self.handle.write(json.dumps({"part": part}) + "\n")

    def commit(self) -> None:
        """Move the new index into place, unless it equals the old one (a rerun that found nothing changed:
        no fsync for each of a shard's thousands of unchanged path groups)."""
        self.handle.flush()
        if self.path.exists() and filecmp.cmp(self.tmp, self.path, shallow=False):
            self.handle.close()
            return
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp, self.path)
