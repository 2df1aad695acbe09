"""Exact micro-batching of CLAP windows across files, with AMP on CUDA and out-of-memory fall-back.

Windows of many files are stacked along the batch dimension, at most ``max_batch_windows`` per forward pass.
The model is in eval mode and every op is per-sample, so a window's embedding does not depend on its batch
neighbours (fp32: max abs difference <= 1e-5, tested). A CUDA out-of-memory error halves the batch and
retries, down to one window; a window that still fails marks only its own file as failed.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np

from . import MODEL_INPUT_SAMPLES, MODEL_SAMPLE_RATE
from .model import LoadedModel

logger = logging.getLogger(__name__)

# On the CPU a forward pass holds at most this many windows per worker: larger passes were slower, their
# activations outgrowing what the allocator keeps at hand (docs/benchmarks.md). The batch limit still applies.
CPU_WINDOWS_PER_PASS = 4

def ordered_prefetch(fn: Callable, items: Iterable, *, workers: int, depth: int) -> Iterator:
    """``map(fn, items)`` computed by ``workers`` threads, at most ``depth`` results ahead, in input order.

    Decoding and window preparation release the GIL for most of their time, so a few threads keep a GPU fed.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="clap-loader") as pool:
        window: deque[Future] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= depth:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def max_batch_windows(max_batch_audio_seconds: float) -> int:
    """Windows per forward pass: each window counts at its model-input length (10 s)."""
    return max(1, math.floor(max_batch_audio_seconds / (MODEL_INPUT_SAMPLES / MODEL_SAMPLE_RATE)))


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class ForwardStats:
    """What the forward passes cost: seconds inside the model, windows, batches, OOM retries."""

    seconds: float = 0.0
    windows: int = 0
    batches: int = 0
    oom_retries: int = 0
    batch_sizes: list = field(default_factory=list)


class ClapEmbedder:
    """Runs model-ready windows ``[shape=(k, 480000)]`` through a :class:`LoadedModel`.

    Parameters
    ----------
    loaded : LoadedModel
    max_batch_windows : int
        Upper bound of windows per forward pass.
    enable_amp : bool
        Autocast to float16 on CUDA; ignored on CPU (fp32).
    workers : int
        Forward passes run at once (CPU): each runs single-threaded, which on small CPUs beats one pass
        spread over all cores. Use 1 on CUDA, where one stream is kept busy.
    on_batch : callable, optional
        Called with each finished batch's window count (from the worker thread): a job's progress.
    """

    def __init__(self, loaded: LoadedModel, *, max_batch_windows: int, enable_amp: bool = True,
                 workers: int = 1, on_batch: Callable[[int], None] | None = None) -> None:
        self.loaded = loaded
        self.max_batch_windows = max(1, int(max_batch_windows))
        self.use_amp = bool(enable_amp) and loaded.device.startswith("cuda")
        self.workers = 1 if loaded.device.startswith("cuda") else max(1, int(workers))
        self._pin_memory = loaded.device.startswith("cuda")
        self.stats = ForwardStats()
        self.on_batch = on_batch or (lambda windows: None)
        self._stats_lock = threading.Lock()

    @property
    def precision(self) -> str:
        return "fp16-autocast" if self.use_amp else "fp32"

    def _host_batch(self, windows: list[np.ndarray]):
        """The windows of one forward pass as one host tensor ``[shape=(k, 480000)]``, made in a single copy.

        On CUDA it is page-locked: its copy to the device is then a DMA that the forward thread does not wait
        for, where torch copies a pageable tensor through a staging buffer, synchronously. The CPU takes the same
        path with ordinary memory.
        """
        import torch

        batch = torch.empty((len(windows), windows[0].shape[0]), dtype=torch.float32, pin_memory=self._pin_memory)
        np.stack(windows, out=batch.numpy())
        return batch

    def _forward(self, batch) -> np.ndarray:
        """One forward pass of a host batch from :meth:`_host_batch`; the seam where tests inject faults."""
        import torch

        tensor = batch.to(self.loaded.device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = self.loaded.model(tensor)
        return out.float().cpu().numpy()

    def _run(self, batch) -> list[np.ndarray | BaseException]:
        """Embed ``batch``, halving on OOM; returns one embedding or the final error per window."""
        try:
            started = time.perf_counter()
            out = self._forward(batch)
            with self._stats_lock:
                self.stats.seconds += time.perf_counter() - started
                self.stats.windows += len(batch)
                self.stats.batches += 1
                self.stats.batch_sizes.append(len(batch))
            self.on_batch(len(batch))
            return list(out)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried, the rest re-raised
            if not _is_oom(exc):
                raise
            self._free_cuda()
            if len(batch) == 1:
                logger.warning("CLAP forward pass out of memory on a single window")
                return [exc]
            with self._stats_lock:
                self.stats.oom_retries += 1
            half = len(batch) // 2
            logger.warning("CLAP out of memory at batch %d; retrying as %d + %d", len(batch), half, len(batch) - half)
            return self._run(batch[:half]) + self._run(batch[half:])

    @staticmethod
    def _free_cuda() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings ``[shape=(k, 512)]`` of ``windows`` ``[shape=(k, 480000)]``; raises on a failed window."""
        (_, result), = list(self.embed_stream([(None, windows)]))
        if isinstance(result, BaseException):
            raise result
        return result

    def embed_stream(self, items: Iterable[tuple[Hashable, np.ndarray]]
                     ) -> Iterator[tuple[Hashable, np.ndarray | BaseException]]:
        """Micro-batch the windows of many files.

        ``items`` yields ``(file_id, windows [shape=(k, 480000)])`` (an array, or any sequence of windows, indexed
        when its batch is formed); the generator yields ``(file_id, embeddings [shape=(k, 512)])`` in input order
        as soon as all of a file's windows are done, or ``(file_id, error)`` when one of its windows failed even
        alone. Windows are consumed lazily, so a producer thread can decode the next files while batches run; up
        to ``workers`` batches run at once.
        """
        pending: deque[tuple[Hashable, int, Sequence]] = deque()  # (file, window index, the file's windows)
        parts: dict[Hashable, list] = {}
        failed: dict[Hashable, BaseException] = {}
        order: deque[Hashable] = deque()
        inflight: deque[tuple[list, Future]] = deque()
        # Forward passes run in pool threads, one batch queued beyond the running ones, so the caller's thread
        # distributes (and writes) results while the model already computes the next batch.
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clap-forward")

        # Several CPU workers each take an equal share of the batch limit (at most CPU_WINDOWS_PER_PASS); at the
        # end of the stream what is left is split evenly, so no worker idles while another runs a long tail batch.
        share = max(1, -(-self.max_batch_windows // self.workers))
        if not self.loaded.device.startswith("cuda"):
            share = min(share, CPU_WINDOWS_PER_PASS)

        def launch(limit: int):
            """Full batches while ``limit`` windows wait (``limit=0``: the rest, in even batches), each made only
            when a worker is about to be free: at most ``workers`` + 1 batches exist at once, however many windows
            a file has (a long file's windows are read from its WAV only here)."""
            size = share if limit else min(share, max(1, -(-len(pending) // self.workers)))
            while len(pending) >= limit and pending:
                take = [pending.popleft() for _ in range(min(size, len(pending)))]
                inflight.append((take, pool.submit(self._run, self._host_batch([ws[i] for _, i, ws in take]))))
                yield from collect(self.workers)  # keep every worker busy, and one batch queued

        def collect(keep: int):
            while len(inflight) > keep:
                take, future = inflight.popleft()
                for (file_id, index, _), output in zip(take, future.result()):
                    if isinstance(output, BaseException):
                        failed.setdefault(file_id, output)
                    else:
                        parts[file_id][index] = output
                while order and (order[0] in failed or all(p is not None for p in parts[order[0]])):
                    done = order.popleft()
                    result = parts.pop(done)
                    yield (done, failed.pop(done)) if done in failed else (done, np.stack(result))

        try:
            for file_id, windows in items:
                parts[file_id] = [None] * len(windows)
                order.append(file_id)
                for index in range(len(windows)):
                    pending.append((file_id, index, windows))
                yield from launch(share)
            yield from launch(0)
            yield from collect(0)
        finally:
            pool.shutdown(wait=True)
