"""An artifact's file: its payload, then a trailer with the payload's digest, size and metadata.

``payload | record (JSON) | footer``, the footer being ``digest (16 bytes) | payload bytes (u64) | record bytes
(u32) | sealed mtime (i64, ns) | magic (8 bytes)``. One file per artifact, because cluster file systems bound
files per user; the payload's readers (libsndfile, FFmpeg, numpy's ``np.load``) stop at the payload's own end,
so a WAV or ``.npy`` artifact stays a file any tool opens. A store written before trailers (each payload with a
``<name>.meta.json`` sidecar) is read as it is: :func:`read_trailer` says None for its files.
"""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"AFSTORE1"
SIDECAR_SUFFIX = ".meta.json"
_FOOTER = struct.Struct("<16sQIq8s")


@dataclass(frozen=True)
class Trailer:
    """What an artifact's file says of its payload.

    ``record`` holds the artifact's ``key``, its ``meta`` and when it was ``created``; ``sealed_mtime_ns`` is the
    mtime the file was given when written: while the file keeps it, its digest is trusted without a rehash.
    """

    record: dict
    digest: str
    payload_size: int
    sealed_mtime_ns: int

    def to_bytes(self) -> bytes:
        record = json.dumps(self.record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        return record + _FOOTER.pack(bytes.fromhex(self.digest), self.payload_size, len(record),
                                     self.sealed_mtime_ns, MAGIC)


def read_trailer(handle: BinaryIO, file_size: int) -> Trailer | None:
    """The trailer of the open artifact file ``handle`` of ``file_size`` bytes; None when the file ends without
    one (a sidecar-era artifact); ValueError when the footer does not fit the file (truncated, damaged)."""
    if file_size < _FOOTER.size:
        return None
    handle.seek(file_size - _FOOTER.size)
    digest, payload_size, record_size, sealed_ns, magic = _FOOTER.unpack(handle.read(_FOOTER.size))
    if magic != MAGIC:
        return None
    if payload_size + record_size + _FOOTER.size != file_size:
        raise ValueError("size mismatch")
    handle.seek(payload_size)
    record = json.loads(handle.read(record_size))
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    return Trailer(record, digest.hex(), payload_size, sealed_ns)


def read_payload(path) -> bytes:
    """The payload bytes of the artifact file at ``path`` (a sidecar-era file is its payload)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        trailer = read_trailer(handle, size)
        handle.seek(0)
        return handle.read(size if trailer is None else trailer.payload_size)


def seal_time_ns() -> int:
    """A sealed mtime: whole even seconds, 2 s or more in the past, so that any later write changes the mtime and
    every filesystem keeps it exactly (FAT's clock ticks in 2 s)."""
    seconds = int(time.time()) - 2
    return (seconds - seconds % 2) * 1_000_000_000
