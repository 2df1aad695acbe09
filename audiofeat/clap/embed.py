"""Exact micro-batching of CLAP windows across files, with autocast precisions, compiled forward passes and
out-of-memory fall-back.

Windows of many files are stacked along the batch dimension, at most ``max_batch_windows`` per forward pass.
The model is in eval mode and every op is per-sample, so a window's embedding does not depend on its batch
neighbours (fp32: max abs difference <= 1e-5, tested). A batch reaches the device as its real samples (int16 on
LAION's grid, see :mod:`.feeder`); scaling, LAION's repeat-padding and zero-padding run there. A CUDA
out-of-memory error halves the batch and retries, down to one window; a window that still fails marks only its
own file as failed.
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
from .feeder import Batch
from .model import LoadedModel

logger = logging.getLogger(__name__)

# On the CPU a forward pass holds at most this many windows per worker: each worker's activations stay in the
# heap, so 4 took 200 MB more at the same speed, and 8 were slower (docs/benchmarks.md). The batch limit applies.
CPU_WINDOWS_PER_PASS = 2

def pass_windows(max_batch_windows: int, workers: int, cuda: bool) -> int:
    """Windows per forward pass: several CPU workers each take an equal share of the batch limit (at most
    CPU_WINDOWS_PER_PASS); CUDA takes the whole limit."""
    share = max(1, -(-max(1, int(max_batch_windows)) // max(1, workers)))
    return share if cuda else min(share, CPU_WINDOWS_PER_PASS)


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


PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


def precision_label(precision: str) -> str:
    """What manifests and artifact keys record: ``fp32``, ``fp16-autocast`` or ``bf16-autocast``."""
    return "fp32" if precision == "fp32" else f"{precision}-autocast"


def device_model_inputs(samples, lengths):
    """Model-ready windows ``[shape=(k, 480000)]`` float32 on the samples' device, from ``samples``
    ``[shape=(k, 480000)]`` (int16 on LAION's grid: divided by 32767; float32: as given) and ``lengths``
    ``[shape=(k,)]`` (a row's real samples): LAION's ``repeatpad`` (the clip repeated ``floor(L / n)`` times,
    then zeros) as one gather, the same values as :func:`~audiofeat.clap.windows.model_inputs`."""
    import torch

    x = samples.float() / 32767.0 if samples.dtype == torch.int16 else samples.float()
    length = x.shape[1]
    n = lengths.to(x.device).view(-1, 1)
    index = torch.arange(length, device=x.device).view(1, -1)
    repeated = x.gather(1, index % n)
    return torch.where(index < (length // n) * n, repeated, torch.zeros((), dtype=x.dtype, device=x.device))


def array_batches(items: Iterable[tuple[Hashable, Sequence]], batch_windows: int) -> Iterator[Batch]:
    """Batches of model-ready float32 windows given as arrays (or any sequence of windows): ``items`` yields
    ``(file id, windows [shape=(k, 480000)])``. For callers that hold windows already (tests, benchmarks)."""
    pending: deque = deque()
    starts: list = []

    def batch(size: int) -> Batch:
        take = [pending.popleft() for _ in range(size)]
        rows = np.stack([np.asarray(ws[i], dtype=np.float32) for _, i, ws in take])
        made = Batch(rows, np.full(size, rows.shape[1], dtype=np.int64), [(f, i) for f, i, _ in take],
                     starts=list(starts))
        starts.clear()
        return made

    for file_id, windows in items:
        starts.append((file_id, len(windows)))
        pending.extend((file_id, i, windows) for i in range(len(windows)))
        while len(pending) >= batch_windows:
            yield batch(batch_windows)
    while pending:
        yield batch(min(batch_windows, len(pending)))


class ClapEmbedder:
    """Runs batches of windows (:class:`~audiofeat.clap.feeder.Batch`) through a :class:`LoadedModel`.

    Parameters
    ----------
    loaded : LoadedModel
    max_batch_windows : int
        Upper bound of windows per forward pass.
    precision : {"fp32", "fp16", "bf16"}
        Autocast dtype of the forward passes (the STFT and mel front end stay float32).
    workers : int
        Forward passes run at once (CPU): each runs single-threaded, which on small CPUs beats one pass
        spread over all cores. Use 1 on CUDA, where one stream is kept busy.
    fixed_shape : bool
        Pad every batch to :attr:`pass_windows` rows (a compiled graph or CUDA graph keeps one shape).
    on_batch : callable, optional
        Called with each finished batch's window count (from the worker thread): a job's progress.
    """

    def __init__(self, loaded: LoadedModel, *, max_batch_windows: int, precision: str = "fp32",
                 workers: int = 1, fixed_shape: bool = False, on_batch: Callable[[int], None] | None = None) -> None:
        self.loaded = loaded
        self.cuda = loaded.device.startswith("cuda")
        self.max_batch_windows = max(1, int(max_batch_windows))
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} must be one of {sorted(PRECISIONS)}")
        self.autocast_dtype = PRECISIONS[precision]
        self.precision = precision_label(precision)
        self.workers = 1 if self.cuda else max(1, int(workers))
        self.fixed_shape = bool(fixed_shape)
        self.stats = ForwardStats()
        self.on_batch = on_batch or (lambda windows: None)
        self._stats_lock = threading.Lock()

    @property
    def pass_windows(self) -> int:
        return pass_windows(self.max_batch_windows, self.workers, self.cuda)

    def _to_device(self, batch: Batch):
        """``(samples, lengths)`` of ``batch`` on the model's device, padded to the fixed shape when asked; the
        host buffer may be reused once this returns (a pageable copy completes before it returns)."""
        import torch

        samples = torch.from_numpy(batch.samples)
        lengths = torch.from_numpy(batch.lengths)
        if self.fixed_shape and len(batch.tags) < self.pass_windows:
            pad = self.pass_windows - len(batch.tags)
            samples = torch.cat([samples, samples.new_zeros((pad, samples.shape[1]))])
            lengths = torch.cat([lengths, lengths.new_full((pad,), samples.shape[1])])
        if self.cuda:
            return samples.to(self.loaded.device), lengths.to(self.loaded.device)
        return samples.clone(), lengths.clone()

    def _forward(self, samples, lengths) -> np.ndarray:
        """One forward pass of device samples and lengths; the seam where tests inject faults."""
        import torch

        autocast = torch.autocast(self.loaded.device.split(":")[0], dtype=getattr(torch, self.autocast_dtype)) \
            if self.autocast_dtype else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = self.loaded.forward(device_model_inputs(samples, lengths))
        return out.float().cpu().numpy()

    def _run(self, samples, lengths, real: int) -> list[np.ndarray | BaseException]:
        """Embed the first ``real`` rows of a device batch, halving on OOM; one embedding or error per row."""
        try:
            started = time.perf_counter()
            out = self._forward(samples, lengths)[:real]
            with self._stats_lock:
                self.stats.seconds += time.perf_counter() - started
                self.stats.windows += real
                self.stats.batches += 1
                self.stats.batch_sizes.append(real)
            self.on_batch(real)
            return list(out)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried, the rest re-raised
            if not _is_oom(exc):
                raise
            self._free_cuda()
            if real == 1:
                logger.warning("CLAP forward pass out of memory on a single window")
                return [exc]
            with self._stats_lock:
                self.stats.oom_retries += 1
            half = real // 2
            logger.warning("CLAP out of memory at batch %d; retrying as %d + %d", real, half, real - half)
            return (self._run(samples[:half], lengths[:half], half)
                    + self._run(samples[half:real], lengths[half:real], real - half))

    @staticmethod
    def _free_cuda() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings ``[shape=(k, EMBEDDING_DIM)]`` of ``windows`` ``[shape=(k, 480000)]``; raises on a failed window."""
        (_, result), = list(self.embed_stream([(None, windows)]))
        if isinstance(result, BaseException):
            raise result
        return result

    def embed_stream(self, items: Iterable[tuple[Hashable, Sequence]]
                     ) -> Iterator[tuple[Hashable, np.ndarray | BaseException]]:
        """:meth:`embed_batches` of windows given as arrays: ``items`` yields ``(file_id, windows)``."""
        return self.embed_batches(array_batches(items, self.pass_windows))

    def embed_batches(self, batches: Iterable[Batch]) -> Iterator[tuple[Hashable, np.ndarray | BaseException]]:
        """Embed a stream of batches; yields ``(file_id, embeddings [shape=(k, EMBEDDING_DIM)])`` in the files' order as
        soon as all of a file's windows are done, or ``(file_id, error)`` when one of its windows failed even
        alone (or its preparation failed). Up to ``workers`` batches run at once, one more waits on the device;
        each batch's host buffer is released as soon as it is on the device."""
        rows: dict[Hashable, np.ndarray | None] = {}  # a file's embeddings, filled in as its windows finish
        left: dict[Hashable, int] = {}  # its windows not yet back
        sizes: dict[Hashable, int] = {}
        failed: dict[Hashable, BaseException] = {}
        order: deque[Hashable] = deque()
        inflight: deque[tuple[list, Future]] = deque()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clap-forward")

        def collect(keep: int):
            while len(inflight) > keep:
                tags, future = inflight.popleft()
                for (file_id, index), output in zip(tags, future.result()):
                    if file_id not in left:  # its file failed and was reported already
                        continue
                    left[file_id] -= 1
                    if isinstance(output, BaseException):
                        failed.setdefault(file_id, output)
                        continue
                    if rows[file_id] is None:
                        rows[file_id] = np.empty((sizes[file_id], output.shape[-1]), np.float32)
                    # Copied, so the pass's output is freed now: a long file's thousands of windows kept as
                    # views held their passes' buffers scattered over the heap until the file ended.
                    rows[file_id][index] = output
                while order and (order[0] in failed or left[order[0]] == 0):
                    done = order.popleft()
                    result = rows.pop(done)
                    del left[done], sizes[done]
                    yield (done, failed.pop(done)) if done in failed else (done, result)

        try:
            for batch in batches:
                for file_id, windows in batch.starts:
                    rows[file_id], left[file_id], sizes[file_id] = None, windows, windows
                    order.append(file_id)
                for row, exc in batch.failed.items():
                    failed.setdefault(batch.tags[row][0], exc)
                samples, lengths = self._to_device(batch)
                batch.release()
                inflight.append((batch.tags, pool.submit(self._run, samples, lengths, len(batch.tags))))
                yield from collect(self.workers)  # keep every worker busy, and one batch queued
            yield from collect(0)
        finally:
            pool.shutdown(wait=True)
