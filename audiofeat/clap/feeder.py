"""CLAP windows prepared in worker processes, written into fixed shared-memory batch buffers.

The forward loop asks for batches and hands each to the device; it does no per-window work itself. Workers are
fresh interpreters (``python -m audiofeat.clap.feeder``), safe beside torch, CUDA and any threads of the job:
they read a file's windows from its WAV, apply LAION's int16 quantisation and write the real samples (int16, no
padding: the device repeats and pads) into a buffer slot. Per batch the loop sends one message to each worker
that fills it and receives one back, so a thread running Python without pause beside it (a CUDA launch loop)
costs it a few switch intervals per batch, not per window (``benchmarks/bench_loader.py``).

A file whose WAV cannot be read for its own reasons is that file's verdict; a fault (an OSError) or a worker
that dies ends the job with one line. Buffers are anonymous memory (``memfd``) shared by descriptor, so nothing
is left behind however the job ends; a worker exits when its pipe from the job closes.
"""
from __future__ import annotations

import errno as errno_codes
import mmap
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Hashable, Iterator, Sequence

import numpy as np

from ..faults import Fault
from . import MODEL_INPUT_SAMPLES, MODEL_SAMPLE_RATE
from .windows import Window, active_fraction, quantise_int16

WORKER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FilePlan:
    """A file's windows to prepare: its WAV, its windows (in samples at the model's rate) and whether their
    active fractions are wanted (the weighted aggregation)."""

    file_id: Hashable
    wav: str
    windows: tuple[Window, ...]
    window: int  # segment.window_seconds in samples: what the active fraction is measured against
    weighted: bool = False


@dataclass
class Batch:
    """One forward pass's windows: ``samples`` ``[shape=(k, 480000)]`` int16 (LAION's grid, real samples then
    zeros) or float32 (model-ready), ``lengths`` ``[shape=(k,)]`` real samples per row, ``tags`` the
    ``(file id, window index)`` of each row, ``starts`` the ``(file id, windows)`` of each file whose first
    window is here, and ``failed`` the rows whose file could not be prepared. Call :meth:`release` once the
    samples are copied: the buffer is refilled."""

    samples: np.ndarray
    lengths: np.ndarray
    tags: list
    starts: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # row -> exception
    _release: object = None

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class WorkerDied(Fault):
    """A preparation worker ended without being asked to (killed, out of memory): a fault of the machine."""


def prepare_rows(wav: str, windows: Sequence[Window], rows: np.ndarray, *, window: int, weighted: bool
                 ) -> tuple[list[int], list]:
    """Write ``windows`` of the WAV artifact ``wav`` into ``rows`` ``[shape=(len(windows), 480000)]`` int16
    (real samples quantised as LAION does, then zeros); returns their lengths and, when ``weighted``, their
    active fractions against the nominal ``window`` (else None). One read covers all of them: overlapping
    windows are read once."""
    from ..inputs.wav import WavReader, read_wav

    with WavReader(wav) as reader:
        native = reader.samplerate == MODEL_SAMPLE_RATE
        if native:
            first = windows[0].start
            span = reader.read(first, max(w.end for w in windows))
    if not native:  # another audio.target_sr: resampled whole, the rate CLAP needs
        from ..inputs.media import resample

        y, sr = read_wav(wav)
        span, first = resample(y, sr, MODEL_SAMPLE_RATE), 0
    lengths, weights = [], []
    for row, w in zip(rows, windows):
        audio = span[w.start - first:w.end - first]
        weights.append(active_fraction(audio, Window(0, audio.shape[0]), window, MODEL_SAMPLE_RATE)
                       if weighted else None)
        audio = audio[:MODEL_INPUT_SAMPLES]
        row[:audio.shape[0]] = quantise_int16(audio)
        row[audio.shape[0]:] = 0
        lengths.append(int(audio.shape[0]))
    return lengths, weights


class WindowFeeder:
    """Batches of ``batch_windows`` windows of ``plans``, in plan order, prepared by ``workers`` processes
    (0: in this thread, for jobs too small to repay starting processes) into ``buffers`` reused buffers.

    ``tail_workers``: when fewer than ``tail_workers * batch_windows`` windows are left, they are split into
    that many even batches, so that no forward worker idles while another runs a long last batch.
    """

    def __init__(self, plans: Sequence[FilePlan], *, batch_windows: int, workers: int, buffers: int = 4,
                 tail_workers: int = 1) -> None:
        self.plans = list(plans)
        self.batch_windows = max(1, int(batch_windows))
        self.tail_workers = max(1, int(tail_workers))
        self.weights: dict[Hashable, list] = {}
        self._todo = deque((p, i) for p, plan in enumerate(self.plans) for i in range(len(plan.windows)))
        self._free = deque(range(max(2, int(buffers))))
        self._ready: deque = deque()  # (buffer, rows) in order, dispatched
        self._memory, self.buffers = _shared_buffers(max(2, int(buffers)) * self.batch_windows)
        self.buffers = self.buffers.reshape(-1, self.batch_windows, MODEL_INPUT_SAMPLES)
        self._pool = _WorkerPool(self._memory.fileno(), self.buffers.shape, int(workers)) if workers > 0 else None

        self._by_id = {plan.file_id: plan for plan in self.plans}
        self.processes = int(workers) if workers > 0 else 0
        self.worker_peak_rss_mb: float | None = None  # known once closed, when workers ran
        self.prepare_seconds = 0.0  # preparation's own time, in whichever process it ran

    def plan_of(self, file_id: Hashable) -> FilePlan:
        return self._by_id[file_id]

    def batches(self) -> Iterator[Batch]:
        """Each batch as soon as its buffer is full; the previous batches must have been released for the
        buffers to be reused (at most ``buffers`` are out at once)."""
        try:
            self._dispatch()
            while self._ready:
                buffer, rows = self._ready.popleft()
                if self._pool:
                    done, seconds = self._pool.collect(buffer)
                    self.prepare_seconds += seconds
                else:
                    done = self._prepare_here(buffer, rows)
                yield self._batch(buffer, rows, done)
                self._dispatch()
        finally:
            self.close()

    def _dispatch(self) -> None:
        """Fill every free buffer's plan with the next windows and send it to the workers."""
        while self._free and self._todo:
            buffer = self._free.popleft()
            size = self.batch_windows
            if len(self._todo) < self.tail_workers * size:
                size = min(size, -(-len(self._todo) // self.tail_workers))
            rows = [self._todo.popleft() for _ in range(min(size, len(self._todo)))]
            self._ready.append((buffer, rows))
            if self._pool:
                self._pool.send(buffer, _runs(rows, self.plans))

    def _prepare_here(self, buffer: int, rows) -> dict:
        started = time.perf_counter()
        done: dict = {}
        for run in _runs(rows, self.plans):
            _prepare_run(run, self.buffers[buffer], done)
        self.prepare_seconds += time.perf_counter() - started
        return done

    def _batch(self, buffer: int, rows, done: dict) -> Batch:
        lengths = np.ones(len(rows), dtype=np.int64)
        failed = {}
        for row, (p, index) in enumerate(rows):
            outcome = done[row]
            if isinstance(outcome, BaseException):
                failed[row] = outcome
                continue
            lengths[row] = max(1, outcome[0])
            plan = self.plans[p]
            if plan.weighted:
                self.weights.setdefault(plan.file_id, [None] * len(plan.windows))[index] = outcome[1]
        tags = [(self.plans[p].file_id, index) for p, index in rows]
        starts = [(self.plans[p].file_id, len(self.plans[p].windows)) for p, index in rows if index == 0]
        return Batch(self.buffers[buffer, :len(rows)], lengths, tags, starts=starts, failed=failed,
                     _release=lambda: self._free.append(buffer))

    def close(self) -> None:
        if self._pool is not None:
            self.worker_peak_rss_mb = self._pool.peak_rss_mb()
            self._pool.close()
            self._pool = None


def _runs(rows, plans) -> list[tuple]:
    """A buffer's rows as runs of one file's consecutive windows, each the task a worker gets:
    ``(first row, wav, windows, nominal window, weighted)``."""
    runs: list = []
    last = None
    for row, (p, index) in enumerate(rows):
        if last == (p, index - 1):
            runs[-1][2].append(plans[p].windows[index])
        else:
            runs.append((row, plans[p].wav, [plans[p].windows[index]], plans[p].window, plans[p].weighted))
        last = (p, index)
    return runs


def _prepare_run(run: tuple, buffer: np.ndarray, done: dict) -> None:
    """Prepare one run (from :func:`_runs`) into its rows of ``buffer``; ``done[row]`` gets ``(length,
    weight)`` or the exception (the job decides: a fault ends it, anything else is the file's verdict)."""
    position, wav, windows, window, weighted = run
    try:
        lengths, weights = prepare_rows(wav, windows, buffer[position:position + len(windows)], window=window,
                                        weighted=weighted)
    except Exception as exc:  # noqa: BLE001 - handed to the job, which decides verdict or fault
        for k in range(len(windows)):
            done[position + k] = exc
        return
    for k, (length, weight) in enumerate(zip(lengths, weights)):
        done[position + k] = (length, weight)


def _shared_buffers(rows: int) -> tuple[object, np.ndarray]:
    """``rows`` windows of int16 in anonymous shared memory (a memfd, or an unlinked temporary file)."""
    size = rows * MODEL_INPUT_SAMPLES * 2
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("audiofeat-clap-windows", 0)
        handle = os.fdopen(fd, "r+b", buffering=0)
    else:
        handle = tempfile.TemporaryFile()
    handle.truncate(size)
    mapped = mmap.mmap(handle.fileno(), size)
    return _Memory(handle, mapped), np.frombuffer(mapped, dtype=np.int16)


class _Memory:
    def __init__(self, handle, mapped) -> None:
        self.handle, self.mapped = handle, mapped

    def fileno(self) -> int:
        return self.handle.fileno()


class _WorkerPool:
    """``workers`` preparation processes; a buffer's runs are shared out so each worker gets whole runs."""

    def __init__(self, memory_fd: int, shape: tuple, workers: int) -> None:
        self.shape = shape
        self.procs: list[subprocess.Popen] = []
        self.sends: list[Connection] = []
        self.receives: list[Connection] = []
        self.waiting: dict[int, set] = {}  # buffer -> workers still preparing it
        self.outcomes: dict[int, dict] = {}
        self.seconds: dict[int, float] = {}
        self.load = [0] * workers
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_package_root(),
                                                                          os.environ.get("PYTHONPATH")])))
        for _ in range(workers):
            task_r, task_w = os.pipe()
            done_r, done_w = os.pipe()
            proc = subprocess.Popen(
                [sys.executable, "-m", "audiofeat.clap.feeder", str(task_r), str(done_w), str(memory_fd),
                 ",".join(map(str, shape))], pass_fds=(task_r, done_w, memory_fd), env=env, close_fds=True)
            os.close(task_r)
            os.close(done_w)
            self.procs.append(proc)
            self.sends.append(Connection(task_w, readable=False))
            self.receives.append(Connection(done_r, writable=False))

    def send(self, buffer: int, runs) -> None:
        """Share ``runs`` out between the workers, whole runs each, the least loaded first."""
        tasks: dict[int, list] = {}
        for run in runs:
            worker = min(range(len(self.procs)), key=lambda w: self.load[w])
            self.load[worker] += len(run[2])
            tasks.setdefault(worker, []).append(run)
        self.waiting[buffer] = set(tasks)
        self.outcomes[buffer], self.seconds[buffer] = {}, 0.0
        for worker, work in tasks.items():
            self._send(worker, (buffer, work))

    def _send(self, worker: int, message) -> None:
        try:
            self.sends[worker].send(message)
        except OSError as exc:
            raise self._died(worker) from exc

    def collect(self, buffer: int) -> tuple[dict, float]:
        """Wait until every worker has filled its part of ``buffer``; returns ``row -> (length, weight)`` (or
        the row's exception) and the workers' seconds on it."""
        while self.waiting[buffer]:
            for conn in wait(self.receives):
                worker = self.receives.index(conn)
                try:
                    done_buffer, outcomes, windows, seconds = conn.recv()
                except (EOFError, OSError) as exc:
                    raise self._died(worker) from exc
                self.load[worker] -= windows
                self.seconds[done_buffer] += seconds
                self.outcomes[done_buffer].update({row: _rebuilt(o) for row, o in outcomes.items()})
                self.waiting[done_buffer].discard(worker)
        del self.waiting[buffer]
        return self.outcomes.pop(buffer), self.seconds.pop(buffer)

    def _died(self, worker: int) -> WorkerDied:
        proc = self.procs[worker]
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return WorkerDied(f"CLAP preparation worker {proc.pid} died ({how}; out of memory or killed?); "
                          "rerun the same command")

    def peak_rss_mb(self) -> float | None:
        """The largest worker's peak resident memory so far, MiB (its own, from ``/proc``: ``getrusage`` would
        count what the job held when it started the worker); None where ``/proc`` has none."""
        peaks = [_vm_hwm_mb(proc.pid) for proc in self.procs]
        return max((round(p, 1) for p in peaks if p is not None), default=None)

    def close(self) -> None:
        """Close the pipes (each worker exits on its next read) and reap every worker; kill one that hangs."""
        for conn in self.sends + self.receives:
            conn.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            kib = next((line.split()[1] for line in status if line.startswith("VmHWM:")), None)
    except OSError:
        return None
    return None if kib is None else int(kib) / 1024


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _portable(exc: BaseException):
    """An exception as plain values for the pipe (its class may not unpickle in the job)."""
    return ("error", type(exc).__name__, getattr(exc, "errno", None) if isinstance(exc, OSError) else None,
            getattr(exc, "filename", None) if isinstance(exc, OSError) else None, str(exc))


def _rebuilt(outcome):
    """A worker's outcome back in the job: ``(length, weight)``, or an exception classified as the original
    (an OSError stays one, so a full disk or a missing WAV is still a fault)."""
    if not (isinstance(outcome, tuple) and outcome and outcome[0] == "error"):
        return outcome
    _, name, code, filename, text = outcome
    if code is not None or name in ("OSError", "FileNotFoundError", "PermissionError"):
        exc = OSError(code or errno_codes.EIO, os.strerror(code or errno_codes.EIO), filename)
    elif name == "MemoryError":
        exc = MemoryError(text)
    else:
        exc = RuntimeError(f"{name}: {text}" if text else name)
    return exc


def _worker_main(task_fd: int, done_fd: int, memory_fd: int, shape: tuple) -> None:
    """A worker's loop: a ``(buffer, runs)`` task in, ``(buffer, outcomes, windows, seconds)`` out, until the
    pipe from the job closes."""
    tasks, results = Connection(task_fd, writable=False), Connection(done_fd, readable=False)
    size = int(np.prod(shape)) * 2
    buffers = np.frombuffer(mmap.mmap(memory_fd, size), dtype=np.int16).reshape(shape)
    while True:
        try:
            buffer, runs = tasks.recv()
        except EOFError:
            return
        started = time.perf_counter()
        done: dict = {}
        for run in runs:
            _prepare_run(run, buffers[buffer], done)
        outcomes = {row: _portable(o) if isinstance(o, BaseException) else o for row, o in done.items()}
        try:
            results.send((buffer, outcomes, sum(len(run[2]) for run in runs), time.perf_counter() - started))
        except OSError:  # the job is gone
            return


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), tuple(int(x) for x in sys.argv[4].split(",")))
