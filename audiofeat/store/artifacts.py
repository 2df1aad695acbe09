"""Content-addressed artifact store.

An artifact is addressed by ``(content key, extractor name, extractor version, parameter hash)``; reuse happens
if and only if all four match. Each artifact is one file: its payload and a trailer with the payload's BLAKE2b
digest, its size and free-form metadata (:mod:`.trailer`). Writes are atomic (temporary file, fsync, rename), so
a reader sees a complete artifact or none; a payload whose digest does not match is discarded. Concurrent writers
of the same artifact write identical payloads and the last rename wins.

Hashing every payload on every lookup would cost a rerun as much reading as the first run wrote. So each file is
given, when written, a "sealed" mtime its trailer records (2 s or more in the past, so that any later write
changes it), and a lookup that finds that mtime trusts the digest; any other mtime means a rehash, and the sealed
mtime set back. A change that leaves the mtime as it was (bit rot, a tool restoring mtimes) is found by
``audiofeat cache verify``, which rehashes everything. The least-recently-used clock is the file's atime, set on
each use. Artifacts of a store written before trailers (a payload and a ``.meta.json`` sidecar, whose mtime is
their clock) are read, sealed and collected as they are.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

from ..faults import ENVIRONMENT_ERRNOS
from .trailer import SIDECAR_SUFFIX, Trailer, read_trailer, seal_time_ns

logger = logging.getLogger(__name__)

_DIGEST_BYTES = 16  # BLAKE2b-128: collision-resistant far beyond any dataset size.
_CHUNK = 1 << 20
_SEAL_BACKDATE_NS = 2_000_000_000  # a sidecar's seal: further back than any filesystem's clock tick (FAT: 2 s)


def blake2b_file(path: str | os.PathLike, *, size: int | None = None) -> str:
    """Hex BLAKE2b-128 digest of a file's bytes (its first ``size`` bytes, when given)."""
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    remaining = float("inf") if size is None else size
    with open(path, "rb") as handle:
        while remaining > 0 and (chunk := handle.read(int(min(_CHUNK, remaining)))):
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def blake2b_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


def _stat_signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of the parameters that change an extractor's output."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Iterable[bytes], *, durable: bool = True,
                       mtime_ns: int | None = None) -> None:
    """Write ``data`` (bytes, or chunks of them written as they come) to ``path`` atomically: temporary file in
    the same folder, fsync, rename.

    ``durable=False`` skips the fsync, for derived files a rerun rewrites anyway (readers still see the old or
    the new content, never a mix). ``mtime_ns`` is the mtime the file has when it appears.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    # Created like any file, so that the umask decides who may read it (mkstemp's 0600 would keep a store shared
    # between users, or a results folder, unreadable to everyone but its writer).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                handle.write(chunk)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mtime_ns is not None:
            os.utime(tmp, ns=(time.time_ns(), mtime_ns))
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a write's error names no file: name it
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on an artifact's folder (1/256 of an extractor's artifacts): one process at a time
    renames an artifact into place, or removes one it found damaged."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _temporary_name(path: Path) -> Path:
    """A unique hidden name beside ``path``; ``.tmp`` names are never read as artifacts."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def keep_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` a copy of ``src`` that outlives ``src``'s deletion: a hard link where the filesystem allows
    one (``src`` is only ever replaced, never written in place), else a copy; ``dst`` is replaced atomically."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(dst)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@dataclass(frozen=True)
class ArtifactKey:
    """Address of one artifact in the store."""

    content_key: str
    extractor: str
    version: str
    params_hash: str
    suffix: str

    @property
    def relpath(self) -> str:
        return (f"{self.extractor}/{self.content_key[:2]}/"
                f"{self.content_key}.v{self.version}.{self.params_hash}{self.suffix}")


class StoredArtifact(NamedTuple):
    """A verified artifact: its payload's path, the metadata stored with it and the payload's digest."""

    path: Path
    meta: dict
    digest: str


class ArtifactStore:
    """Artifacts under ``root``; with ``reuse=False`` nothing existing is read back (cache disabled).

    Parameters
    ----------
    root : path
        Store folder (``cache.dir``, or a run-private folder when the cache is disabled).
    reuse : bool
        Whether existing artifacts may be returned by :meth:`get`.
    """

    def __init__(self, root: str | os.PathLike, *, reuse: bool = True) -> None:
        self.root = Path(root)
        self.reuse = reuse
        self.hits = 0
        self.misses = 0
        self.discarded = 0

    def path(self, key: ArtifactKey) -> Path:
        return self.root / "artifacts" / key.relpath

    def get(self, key: ArtifactKey) -> StoredArtifact | None:
        """Return the verified artifact stored under ``key``, or None (and count a miss).

        A payload that is missing, truncated or altered is removed so that it is recomputed.
        """
        path = self.path(key)
        if not self.reuse:
            self.misses += 1
            return None
        record = self._verified_record(path, rehash=False)
        if record is None:
            self.misses += 1
            return None
        self.hits += 1
        _touch(path, record)
        return StoredArtifact(path, record.get("meta", {}), record["digest"])

    def _verified_record(self, path: Path, *, rehash: bool) -> dict | None:
        """The record of an intact artifact; None when there is none, after removing a damaged one.

        The digest is checked when the file's mtime is not the sealed one (or always, with ``rehash``). What
        looks damaged is checked again under the folder's write lock before it is removed, so that a file another
        writer renames into place meanwhile is never taken for damage.
        """
        try:
            try:
                record, sealed = _checked(path, rehash=rehash)
            except (ValueError, KeyError, TypeError):
                with _exclusive(path.parent):
                    record, sealed = _checked(path, rehash=True)
            if not sealed:
                try:
                    with _exclusive(path.parent):
                        _seal(path, record)
                except OSError as exc:  # not ours to change (a store shared by another user): intact all the same
                    logger.debug("cannot seal %s (%s); it is rehashed on every lookup", path, exc)
        except FileNotFoundError:
            return None
        except PermissionError as exc:  # unreadable to this user, not damaged: never discard another's artifact
            logger.warning("cannot read artifact %s (%s); it will be recomputed", path, exc)
            return None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
                raise  # the disk's or the machine's trouble (EIO, ...), not damage: a fault, nothing discarded
            logger.warning("discarding corrupt artifact %s (%s); it will be recomputed", path, exc)
            for stale in (path, _sidecar(path)):
                try:
                    stale.unlink(missing_ok=True)
                except PermissionError:  # another user's: the rewrite replaces it, or fails naming the cause
                    pass
            self.discarded += 1
            return None
        return record

    def put(self, key: ArtifactKey, data: bytes, meta: Mapping[str, Any] | None = None) -> StoredArtifact:
        """Store ``data`` atomically under ``key``; returns what :meth:`get` will return for it."""
        path = self.path(key)
        trailer = _new_trailer(key, blake2b_bytes(data), len(data), meta)
        with _exclusive(path.parent):  # never renamed over a file a reader is checking before removing it
            atomic_write_bytes(path, data + trailer.to_bytes(), mtime_ns=trailer.sealed_mtime_ns)
        return StoredArtifact(path, trailer.record["meta"], trailer.digest)

    def staging_path(self, key: ArtifactKey) -> Path:
        """A temporary name beside ``key``'s payload, for a payload written as a file, piece by piece, and then
        stored by :meth:`put_file` (the caller removes it if it gives up)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _temporary_name(path)

    def put_file(self, key: ArtifactKey, staged: Path, meta: Mapping[str, Any] | None = None) -> StoredArtifact:
        """Store the file at ``staged`` (from :meth:`staging_path`) under ``key``: its trailer appended, moved
        into place."""
        path = self.path(key)
        trailer = _new_trailer(key, blake2b_file(staged), staged.stat().st_size, meta)
        with open(staged, "ab") as handle:
            handle.write(trailer.to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.utime(staged, ns=(time.time_ns(), trailer.sealed_mtime_ns))
        with _exclusive(path.parent):
            os.replace(staged, path)
        return StoredArtifact(path, trailer.record["meta"], trailer.digest)

    def verify(self) -> dict[str, int]:
        """Rehash every payload; remove those whose digest is wrong or that have no record. Returns counts."""
        checked = discarded = 0
        for path, st, _used in list(self._entries()):
            checked += 1
            record = self._verified_record(path, rehash=True)
            if record is None:
                _remove(path)  # what is left of it: a payload whose record was never written
                discarded += 1
            elif "sealed_mtime_ns" in record:  # reading it is no use: the LRU clock (atime) as it was
                with contextlib.suppress(OSError):
                    os.utime(path, ns=(st.st_atime_ns, record["sealed_mtime_ns"]))
        return {"checked": checked, "discarded": discarded}

    def _entries(self) -> Iterator[tuple[Path, os.stat_result, float]]:
        """Every artifact: ``(path, stat, when it was last written or used, in seconds)``."""
        base = self.root / "artifacts"
        for dirpath, _dirs, files in os.walk(base):
            names = set(files)
            for name in files:
                if name.endswith(SIDECAR_SUFFIX) or name.endswith(".tmp"):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                    sidecar = name + SIDECAR_SUFFIX in names and _sidecar(path).stat()
                except FileNotFoundError:
                    continue
                yield path, st, sidecar.st_mtime if sidecar else st.st_atime

    def stats(self) -> dict[str, Any]:
        """Count and size of artifacts per extractor."""
        per: dict[str, dict[str, float]] = {}
        for path, st, _used in self._entries():
            extractor = path.relative_to(self.root / "artifacts").parts[0]
            entry = per.setdefault(extractor, {"files": 0, "bytes": 0})
            entry["files"] += 1
            entry["bytes"] += st.st_size
        total = sum(e["bytes"] for e in per.values())
        return {"root": str(self.root), "extractors": per, "total_bytes": total,
                "total_files": sum(e["files"] for e in per.values())}

    def collect_garbage(self, *, ttl_hours: float = 0, max_gb: float = 0, grace_hours: float = 0,
                        protect: set[str] | None = None, now: float | None = None) -> dict[str, int]:
        """Remove artifacts unused for ``ttl_hours`` and then least-recently-used ones above ``max_gb``.

        ``protect`` holds payload paths (as strings) the current run uses; they are never removed, nor is anything
        used within ``grace_hours`` (by any run: a store shared by projects is bounded without breaking theirs).
        """
        now = time.time() if now is None else now
        recent = now - grace_hours * 3600
        protect = protect or set()
        entries = sorted((used, path, st) for path, st, used in self._entries())
        protect = protect | {str(path) for used, path, _st in entries if used > recent}
        removed = removed_bytes = 0
        kept: list[tuple[Path, os.stat_result]] = []
        for used, path, st in entries:
            expired = ttl_hours > 0 and now - used > ttl_hours * 3600
            if expired and str(path) not in protect:
                removed += 1
                removed_bytes += st.st_size
                _remove(path)
            else:
                kept.append((path, st))
        if max_gb > 0:
            budget = max_gb * 1e9
            total = sum(st.st_size for _, st in kept)
            for path, st in kept:  # oldest first
                if total <= budget:
                    break
                if str(path) in protect:
                    continue
                total -= st.st_size
                removed += 1
                removed_bytes += st.st_size
                _remove(path)
        return {"removed_files": removed, "removed_bytes": removed_bytes}


def _new_trailer(key: ArtifactKey, digest: str, size: int, meta: Mapping[str, Any] | None) -> Trailer:
    record = {"key": key.__dict__, "meta": dict(meta or {}), "created": time.time()}
    return Trailer(record, digest, size, seal_time_ns())


def _checked(path: Path, *, rehash: bool) -> tuple[dict, bool]:
    """``(record, whether the file's mtime is the sealed one)`` of the artifact at ``path``; ValueError when it is
    damaged. The record carries ``digest`` and ``size``, and ``sealed_mtime_ns`` when it is a trailer's."""
    st = path.stat()
    with open(path, "rb") as handle:
        trailer = read_trailer(handle, st.st_size)
    if trailer is None:
        return _checked_sidecar(path, st, rehash=rehash)
    sealed = st.st_mtime_ns == trailer.sealed_mtime_ns
    if (rehash or not sealed) and blake2b_file(path, size=trailer.payload_size) != trailer.digest:
        raise ValueError("digest mismatch")
    return {**trailer.record, "digest": trailer.digest, "size": trailer.payload_size,
            "sealed_mtime_ns": trailer.sealed_mtime_ns}, sealed


def _checked_sidecar(path: Path, st: os.stat_result, *, rehash: bool) -> tuple[dict, bool]:
    """:func:`_checked` for a sidecar-era artifact, sealed when its stat is the one its sidecar recorded."""
    try:
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("neither a trailer nor a sidecar") from None
    if st.st_size != record["size"]:
        raise ValueError("size mismatch")
    sealed = record.get("sealed_stat") == _stat_signature(st)
    if (rehash or not sealed) and blake2b_file(path) != record["digest"]:
        raise ValueError("digest mismatch")
    return record, sealed


def _seal(path: Path, record: dict) -> None:
    """Give a verified artifact the stat a lookup trusts: a trailer's sealed mtime back, or (sidecar era) a
    backdated mtime recorded in a rewritten sidecar."""
    if "sealed_mtime_ns" in record:
        os.utime(path, ns=(time.time_ns(), record["sealed_mtime_ns"]))
        return
    backdated = time.time_ns() - _SEAL_BACKDATE_NS
    os.utime(path, ns=(backdated, backdated))
    record["sealed_stat"] = _stat_signature(path.stat())
    atomic_write_text(_sidecar(path), json.dumps(record, sort_keys=True))


def _touch(path: Path, record: dict) -> None:
    """Mark an artifact as used now: the LRU clock of :meth:`ArtifactStore.collect_garbage` (the file's atime;
    a sidecar's mtime in the sidecar era)."""
    try:
        if "sealed_mtime_ns" in record:
            os.utime(path, ns=(time.time_ns(), record["sealed_mtime_ns"]))
        else:
            os.utime(_sidecar(path))
    except OSError:  # another user's artifact: its clock is theirs to move
        pass


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _remove(path: Path) -> None:
    _sidecar(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
