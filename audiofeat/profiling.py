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
        from .store import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), sort_keys=True, indent=1))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
