"""Per-job profiling: wall time per stage, audio seconds, files, cache hits and misses, peak memory."""
from __future__ import annotations

import contextlib
import json
import resource
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb() -> float | None:
    """Peak CUDA memory allocated by torch in this process, MiB; None without CUDA (or torch not loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / (1024 * 1024)


_END = object()


@dataclass
class JobProfile:
    """Accumulates one job's numbers; ``timer(name)`` adds the wall time of a block to ``seconds[name]``."""

    stage: str
    shard: str
    seconds: dict = field(default_factory=lambda: defaultdict(float))
    files: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    extra: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextlib.contextmanager
    def timer(self, name: str):
        """Thread-safe: blocks timed in several threads add up (seconds of work, not wall time)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - start

    def timed_iter(self, name: str, items):
        """``items``, with the time spent waiting for each item added to ``seconds[name]``."""
        iterator = iter(items)
        while True:
            with self.timer(name):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item

    def add(self, name: str, seconds: float) -> None:
        """Thread-safe ``seconds[name] += seconds``."""
        with self._lock:
            self.seconds[name] += seconds

    def to_dict(self) -> dict:
        wall = time.perf_counter() - self.started
        return {
            "stage": self.stage, "shard": self.shard, "wall_s": round(wall, 6), "files": self.files,
            "failed": self.failed, "audio_s": round(self.audio_seconds, 6),
            "x_realtime": round(self.audio_seconds / wall, 3) if wall > 0 else None,
            "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
            "seconds": {k: round(v, 6) for k, v in sorted(self.seconds.items())},
            "peak_rss_mb": round(peak_rss_mb(), 1), "peak_gpu_mb": _round(peak_gpu_mb()), **self.extra,
        }

    def log_line(self) -> str:
        data = self.to_dict()
        xrt = f"{data['x_realtime']:.0f}x realtime" if data["x_realtime"] else "-"
        return (f"{self.stage} {self.shard}: {self.files} files ({self.failed} failed), {data['wall_s']:.2f} s, "
                f"{self.audio_seconds:.1f} s audio, {xrt}, cache {self.cache_hits} hits / {self.cache_misses} misses")

    def write(self, path: str) -> None:
        from ..store.artifacts import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), sort_keys=True, indent=1))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """How far a shard job is: one log line every ``every_s`` seconds (files and work units done of the total,
    rate, ETA), and the same numbers in a small JSON file that ``audiofeat status`` reads. Thread-safe."""

    def __init__(self, stage: str, shard: str, *, files: int, units: int = 0, unit_name: str = "",
                 path: str | None = None, every_s: float = 5.0, log=None) -> None:
        import logging

        self.stage, self.shard, self.path, self.every_s = stage, shard, path, every_s
        self.total_files, self.total_units, self.unit_name = files, units, unit_name
        self.files = self.units = 0
        self.started = self._last = time.time()
        self._log = log or logging.getLogger("audiofeat.progress")
        self._lock = threading.Lock()
        self._write("running")

    def advance(self, files: int = 1, units: int = 0) -> None:
        with self._lock:
            self.files += files
            self.units += units
            now = time.time()
            if now - self._last < self.every_s:
                return
            self._last = now
        self._log.info("%s", self.line())
        self._write("running")

    def eta_s(self) -> float | None:
        done, total = (self.units, self.total_units) if self.total_units else (self.files, self.total_files)
        elapsed = time.time() - self.started
        return None if done <= 0 else elapsed * (total - done) / done

    def line(self) -> str:
        elapsed = max(1e-9, time.time() - self.started)
        parts = [f"{self.stage} {self.shard}: {self.files}/{self.total_files} files"]
        if self.total_units and self.unit_name:
            parts.append(f"{self.units}/{self.total_units} {self.unit_name}")
        eta = self.eta_s()
        parts.append(f"{self.files / elapsed:.1f} files/s, ETA {'-' if eta is None else _duration(eta)}")
        return ", ".join(parts)

    def finish(self) -> None:
        self._write("done")

    def _write(self, state: str) -> None:
        if not self.path:
            return
        from ..store.artifacts import atomic_write_text

        eta = self.eta_s()
        atomic_write_text(self.path, json.dumps({
            "stage": self.stage, "shard": self.shard, "state": state, "files": self.files,
            "total_files": self.total_files, "units": self.units, "total_units": self.total_units,
            "unit_name": self.unit_name, "started": self.started, "updated": time.time(),
            "eta_s": None if eta is None else round(eta, 1)}))
