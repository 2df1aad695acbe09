"""Content-addressed artifact store.

An artifact is addressed by ``(content key, extractor name, extractor version, parameter hash)``; reuse happens
if and only if all four match. Each artifact is one payload file plus a JSON sidecar holding its BLAKE2b digest,
its size and free-form metadata. Writes are atomic (temporary file, fsync, rename; payload first, sidecar last),
so a reader sees either a complete artifact or none; a payload whose digest does not match is discarded.
Concurrent writers of the same artifact write identical bytes and the last rename wins.

Hashing every payload on every lookup would cost a rerun as much reading as the first run wrote. So the sidecar also records the payload's stat (size,
mtime, inode) when its digest was last known to hold, and a lookup whose stat is unchanged trusts it, as the
inputs' stat index does; any other stat means a rehash. The payload's mtime is set 2 s into the past at that
moment ("sealed"), so that a later write, even within the filesystem clock's tick, changes it. A change that
leaves the stat as it was (bit rot, a tool restoring mtimes) is found by ``audiofeat cache verify``, which
rehashes everything. The least-recently-used clock is the sidecar's mtime.
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
from typing import Any, Iterator, Mapping, NamedTuple

from ..faults import ENVIRONMENT_ERRNOS

logger = logging.getLogger(__name__)

_DIGEST_BYTES = 16  # BLAKE2b-128: collision-resistant far beyond any dataset size.
_CHUNK = 1 << 20
_SEAL_BACKDATE_NS = 2_000_000_000  # further back than any filesystem's timestamp granularity (FAT: 2 s)


def blake2b_file(path: str | os.PathLike) -> str:
    """Hex BLAKE2b-128 digest of a file's bytes."""
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def blake2b_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


def _stat_signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of the parameters that change an extractor's output."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename.

    ``durable=False`` skips the fsync, for derived files a rerun rewrites anyway (readers still see the old or
    the new content, never a mix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    # Created like any file, so that the umask decides who may read it (mkstemp's 0600 would keep a store shared
    # between users, or a results folder, unreadable to everyone but its writer).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
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
    writes a payload with its sidecar, or removes one it found damaged."""
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

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".meta.json")

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
        self.touch(path)
        return StoredArtifact(path, record.get("meta", {}), record["digest"])

    def _verified_record(self, path: Path, *, rehash: bool) -> dict | None:
        """The sidecar record of an intact payload; None when there is none, after removing a damaged one.

        The digest is checked when the payload's stat is not the sealed one (or always, with ``rehash``). What
        looks damaged is checked again under the folder's write lock before it is removed, so that a payload and
        sidecar caught between another writer's two renames are never taken for damage.
        """
        try:
            try:
                record, sealed = self._checked(path, rehash=rehash)
            except (ValueError, KeyError, TypeError):
                with _exclusive(path.parent):
                    record, sealed = self._checked(path, rehash=True)
            if not sealed:
                try:
                    with _exclusive(path.parent):
                        self._seal(path, record)
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
            for stale in (path, self._sidecar(path)):
                try:
                    stale.unlink(missing_ok=True)
                except PermissionError:  # another user's: the rewrite replaces it, or fails naming the cause
                    pass
            self.discarded += 1
            return None
        return record

    def _checked(self, path: Path, *, rehash: bool) -> tuple[dict, bool]:
        """``(sidecar record, whether the payload's stat is the sealed one)``; ValueError when it is damaged."""
        record = json.loads(self._sidecar(path).read_text(encoding="utf-8"))
        st = path.stat()
        if st.st_size != record["size"]:
            raise ValueError("size mismatch")
        sealed = record.get("sealed_stat") == _stat_signature(st)
        if (rehash or not sealed) and blake2b_file(path) != record["digest"]:
            raise ValueError("digest mismatch")
        return record, sealed

    def _seal(self, path: Path, record: dict) -> None:
        """Backdate the payload's mtime and write ``record`` with the resulting stat as the sidecar."""
        backdated = time.time_ns() - _SEAL_BACKDATE_NS
        os.utime(path, ns=(backdated, backdated))
        record["sealed_stat"] = _stat_signature(path.stat())
        atomic_write_text(self._sidecar(path), json.dumps(record, sort_keys=True))

    def put(self, key: ArtifactKey, data: bytes, meta: Mapping[str, Any] | None = None) -> StoredArtifact:
        """Store ``data`` atomically under ``key``; returns what :meth:`get` will return for it."""
        path = self.path(key)
        record = self._record(key, blake2b_bytes(data), len(data), meta)
        with _exclusive(path.parent):  # another writer's payload never gets this sidecar
            atomic_write_bytes(path, data)
            self._seal_or_remove(path, record)
        return StoredArtifact(path, record["meta"], record["digest"])

    def staging_path(self, key: ArtifactKey) -> Path:
        """A temporary name beside ``key``'s payload, for a payload written as a file, piece by piece, and then
        stored by :meth:`put_file` (the caller removes it if it gives up)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _temporary_name(path)

    def put_file(self, key: ArtifactKey, staged: Path, meta: Mapping[str, Any] | None = None) -> StoredArtifact:
        """Store the file at ``staged`` (from :meth:`staging_path`) under ``key``, moving it into place."""
        path = self.path(key)
        with open(staged, "rb+") as handle:
            os.fsync(handle.fileno())
        record = self._record(key, blake2b_file(staged), staged.stat().st_size, meta)
        with _exclusive(path.parent):
            os.replace(staged, path)
            self._seal_or_remove(path, record)
        return StoredArtifact(path, record["meta"], record["digest"])

    @staticmethod
    def _record(key: ArtifactKey, digest: str, size: int, meta: Mapping[str, Any] | None) -> dict:
        return {"digest": digest, "size": size, "meta": dict(meta or {}), "key": key.__dict__, "created": time.time()}

    def _seal_or_remove(self, path: Path, record: dict) -> None:
        try:
            self._seal(path, record)
        except BaseException:  # no payload without its sidecar (a full disk fails the sidecar after the payload)
            path.unlink(missing_ok=True)
            raise

    def touch(self, path: Path) -> None:
        """Mark an artifact as used now (the LRU clock of :func:`collect_garbage`: its sidecar's mtime)."""
        try:
            os.utime(self._sidecar(path))
        except OSError:
            pass

    def last_used(self, path: Path, st: os.stat_result) -> float:
        """When the artifact at ``path`` (payload stat ``st``) was last written or used, in seconds."""
        try:
            return self._sidecar(path).stat().st_mtime
        except FileNotFoundError:
            return st.st_mtime

    def verify(self) -> dict[str, int]:
        """Rehash every payload; remove those whose digest is wrong or that have no sidecar. Returns counts."""
        checked = discarded = 0
        for path, _st in list(self.iter_artifacts()):
            checked += 1
            if self._verified_record(path, rehash=True) is None:
                self._remove(path)  # what is left of it: a payload whose sidecar was never written
                discarded += 1
        return {"checked": checked, "discarded": discarded}

    def iter_artifacts(self) -> Iterator[tuple[Path, os.stat_result]]:
        base = self.root / "artifacts"
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(".meta.json") or name.endswith(".tmp"):
                    continue
                path = Path(dirpath) / name
                try:
                    yield path, path.stat()
                except FileNotFoundError:
                    continue

    def stats(self) -> dict[str, Any]:
        """Count and size of artifacts per extractor."""
        per: dict[str, dict[str, float]] = {}
        for path, st in self.iter_artifacts():
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
        entries = sorted((self.last_used(path, st), path, st) for path, st in self.iter_artifacts())
        protect = protect | {str(path) for used, path, _st in entries if used > recent}
        removed = removed_bytes = 0
        kept: list[tuple[Path, os.stat_result]] = []
        for used, path, st in entries:
            expired = ttl_hours > 0 and now - used > ttl_hours * 3600
            if expired and str(path) not in protect:
                removed += 1
                removed_bytes += st.st_size
                self._remove(path)
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
                self._remove(path)
        return {"removed_files": removed, "removed_bytes": removed_bytes}

    def _remove(self, path: Path) -> None:
        self._sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
