"""Shard tables: one JSON line per content key, written by a shard job and read by the next stage.

``DecodeRecord`` is what decoding says of an input (its WAV, or why there is none); ``ExtractRecord`` is what
an extractor says of a decoded file (its artifact and, for extractors whose artifact is not JSON, the manifest
block). Both serialise with ``to_dict``/``from_dict``; ``None`` fields are left out of the JSON.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Iterable, TypeVar

import orjson

from .artifacts import atomic_write_bytes

T = TypeVar("T", "DecodeRecord", "ExtractRecord")


class _Record:
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class DecodeRecord(_Record):
    """An input's decoded WAV (``status: ok``; ``audio`` holds :class:`audiofeat.manifest.AudioInfo`'s fields) or
    the reason it has none (``status: error``; ``artifact`` is the stored decoder verdict, when there is one)."""

    content_key: str
    path: str  # path_text(): for logs; the manifest takes the exact path from the inventory
    status: str
    error: str | None = None
    samples: int | None = None
    audio: dict | None = None
    seconds: float | None = None
    cache_hit: bool | None = None
    extractor: dict | None = None  # {"version", "params_hash"}
    artifact: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def wav(self) -> str:
        return self.audio["wav"]

    @property
    def duration_s(self) -> float:
        return self.audio["duration_s"]


@dataclass(frozen=True)
class ExtractRecord(_Record):
    """One extractor's result for a decoded file: ``ok``, ``error`` (this file's verdict) or ``skipped`` (the
    file has no WAV)."""

    content_key: str
    status: str
    error: str | None = None
    artifact: str | None = None
    artifact_digest: str | None = None
    seconds: float | None = None
    cache_hit: bool | None = None
    extractor: dict | None = None
    block: dict | None = None  # the manifest block, for extractors whose artifact is not that block's JSON


def json_line(record: dict) -> bytes:
    """One sorted-key JSON line. orjson writes NaN as null, so extractors check their numbers are finite."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    atomic_write_bytes(path, b"".join(json_line(r) for r in records))


def read_table(path: str | os.PathLike, kind: type[T]) -> list[T]:
    return [kind.from_dict(data) for data in read_jsonl(path)]


def write_table(path: str | os.PathLike, records: Iterable[DecodeRecord | ExtractRecord]) -> None:
    write_jsonl(path, (r.to_dict() for r in records))
