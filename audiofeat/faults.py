"""Verdicts and faults: the one place that decides what a failure means.

A *verdict* is a property of an input's bytes (not media, no audio stream, truncated, undecodable, non-finite
samples): it is that file's result, recorded per file and reused while the decoder version is the same. A *fault*
is a property of the run's environment (a full disk or quota, an I/O error, a folder the run may not write, no
memory, a file that changed while the run read it, a CUDA error other than out-of-memory): it is never written as
a file's result. The job stops with one line naming the cause and the path, its outputs are not taken as complete,
and the same command after the fix completes every file.
"""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from typing import Mapping

VERDICT, FAULT = "verdict", "fault"

# OSErrors that say something about the machine, never about the bytes a file holds.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOMEM, errno.EMFILE,
    errno.ENFILE, errno.ESTALE, errno.ENOLCK, errno.ENOTCONN, errno.ETIMEDOUT, errno.ENODEV, errno.ENXIO,
})


class Fault(RuntimeError):
    """A fault the pipeline itself detected (a file that changed during the run, a missing store file)."""


class ArtifactGone(Fault):
    """An artifact a shard table names is missing or damaged (another run's gc sharing the store, say): the table
    is removed, so that the same command recomputes what it held."""

    def __init__(self, stage: str, content_key: str, artifact: str) -> None:
        super().__init__(f"{stage} artifact {artifact} is gone from the store or damaged (another run's gc?)")
        self.stage, self.content_key, self.artifact = stage, content_key, artifact


class InputChanged(Fault):
    """An input's stat is no longer the one the inventory hashed: its bytes may not be the content key's."""

    def __init__(self, path: str) -> None:
        super().__init__(f"input {path!a} changed during the run (after the inventory hashed it); rerun the same "
                         "command")


def classify(exc: BaseException) -> str:
    """:data:`FAULT` or :data:`VERDICT` for an exception raised while computing one file's result.

    Callers convert what an input's own bytes cause into verdicts (``DecodeError``) before this is asked; every
    other OSError concerns the run's own files (the store, the results) or the machine, and is a fault.
    """
    if isinstance(exc, (Fault, MemoryError)):
        return FAULT
    if isinstance(exc, (OSError, sqlite3.OperationalError)):  # SQLite's: a full, locked or failing disk
        return FAULT
    if type(exc).__name__ in ("OutOfMemoryError", "AcceleratorError") or "CUDA error" in str(exc):
        return FAULT  # torch's: an OOM that the batch fall-back could not absorb, or a broken device
    return VERDICT


def is_fault(exc: BaseException) -> bool:
    return classify(exc) == FAULT


def fault_line(exc: BaseException, roots: Mapping[str, str]) -> str:
    """One line for the user: the cause, the configured folder (``roots``: config key -> path) it concerns, the
    fix, and that the same command completes the run afterwards."""
    rerun = "then rerun the same command"
    if isinstance(exc, Fault):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"out of memory; lower perf.threads or shard.target_files, or free memory, {rerun}"
    if not isinstance(exc, OSError):
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; " \
               f"check the device, {rerun}"
    path = os.fsdecode(exc.filename) if exc.filename is not None else ""
    key, root = _owning_root(path, roots)
    where = f"{key} {root}" if key else (path or "a file")
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(root or path or ".")
        what = "is full" if exc.errno == errno.ENOSPC else "is over its quota"
        hint = "point CACHE_DIR elsewhere" if key == "cache.dir" else "point it elsewhere"
        return f"{where} {what}: {'unknown' if free is None else free} bytes free; free space or {hint}, {rerun}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where} cannot be written ({reason}: {path}); fix its permissions or mount, {rerun}"
    return f"{where}: {reason} ({path}); check the disk or filesystem, {rerun}"


def _owning_root(path: str, roots: Mapping[str, str]) -> tuple[str, str]:
    """``(config key, folder)`` of the configured folder that holds ``path``, the deepest one first."""
    absolute = os.path.abspath(path) if path else ""
    best = ("", "")
    for key, root in roots.items():
        folder = os.path.abspath(root)
        if absolute == folder or absolute.startswith(folder.rstrip(os.sep) + os.sep):
            if len(folder) > len(best[1]):
                best = (key, folder)
    return best


def free_bytes(folder: str) -> int | None:
    """Free space on the disk that holds ``folder`` (or would, once created); None when unknown."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


class Verdict(Exception):
    """An extractor's finding about one file's content (non-finite output, a failed forward pass): the file's
    error, worded by the message alone."""


def one_line(exc: BaseException) -> str:
    """A failure as one line: a :class:`Verdict`'s message, else ``Type: first line``."""
    text = str(exc).strip().splitlines()
    if isinstance(exc, Verdict):
        return text[0] if text else "no result"
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
