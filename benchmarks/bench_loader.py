"""Benchmark the CLAP job's window feed: worker processes (the job's feeder) against loader threads (the feeder
before it), alone and beside a thread that runs Python without pause.

Why: on a GPU the forward thread spends much of its time in Python, launching kernels. A thread that needs the
GIL back after a C call waits up to the interpreter's switch interval (5 ms by default) whenever another thread
is running Python, so loader threads that hand the GIL back and forth many times per file starve the GPU. The
feeder's workers are processes writing into shared memory; the forward loop takes whole batches.

Both feeders read the same decoded 48 kHz WAVs (the decode job's artifacts; decoding is not timed) and deliver the
same model windows; the consumer takes each batch as the job's forward loop does (threads: stacking a batch's
windows, as the job did; processes: the batch already lies in one buffer) and releases it. Each feeder gets
``--workers`` workers (default: every core but one, the one a launch thread needs). Prints windows/s per case
and ends with the feeder's line. A case stops after ``--max-seconds`` (the windows delivered by then count).

Usage: python benchmarks/bench_loader.py [--files 400] [--repeat 8] [--workers N] [--batch 64] [--max-seconds 30]
"""
import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from audiofeat.clap import MODEL_INPUT_SAMPLES, MODEL_SAMPLE_RATE  # noqa: E402
from audiofeat.clap.feeder import FilePlan, WindowFeeder  # noqa: E402
from audiofeat.clap.windows import model_inputs, plan_windows  # noqa: E402
from audiofeat.inputs.media import load_audio  # noqa: E402
from audiofeat.testing.media import benchmark_sets  # noqa: E402
from audiofeat.inputs.wav import read_wav, wav_bytes  # noqa: E402

WINDOW, HOP = 10 * MODEL_SAMPLE_RATE, 5 * MODEL_SAMPLE_RATE


def decoded_wavs(folder: Path, files: int) -> list[tuple[str, int]]:
    """Short clips decoded to 48 kHz float WAVs, as the decode job stores them: ``(path, frames)``."""
    media, _ = benchmark_sets(folder / "media", files, 0)
    wavs = []
    for i, path in enumerate(media):
        _, y = load_audio(str(path), target_sr=MODEL_SAMPLE_RATE)
        wav = folder / f"{i}.wav"
        wav.write_bytes(wav_bytes(y, MODEL_SAMPLE_RATE))
        wavs.append((str(wav), len(y)))
    return wavs


def thread_feed(wavs, workers: int, batch: int):
    """The feeder before: a loader thread, ``workers`` preparing threads under it in input order, each reading
    a WAV and cutting float windows; the consumer stacks each batch. Yields batches ``[shape=(k, 480000)]``."""
    prepared: queue.Queue = queue.Queue(maxsize=2 * batch)

    def prepare(item):
        wav, _ = item
        y, _ = read_wav(wav)
        return model_inputs(y, plan_windows(len(y), WINDOW, HOP), MODEL_INPUT_SAMPLES)

    stop = threading.Event()

    def loader():
        with ThreadPoolExecutor(workers) as pool:
            ahead: deque = deque()
            for item in wavs:
                if stop.is_set():
                    break
                ahead.append(pool.submit(prepare, item))
                if len(ahead) >= 2 * workers:
                    prepared.put(ahead.popleft().result())
            while ahead and not stop.is_set():
                prepared.put(ahead.popleft().result())
        prepared.put(None)

    thread = threading.Thread(target=loader, daemon=True)
    thread.start()
    pending: list = []
    try:
        while (windows := prepared.get()) is not None:
            pending.extend(windows)
            while len(pending) >= batch:
                yield np.stack(pending[:batch])
                del pending[:batch]
        if pending:
            yield np.stack(pending)
    finally:  # taken before the end (--max-seconds): stop the loader, and let it finish its put
        stop.set()
        while thread.is_alive():
            try:
                prepared.get(timeout=0.1)
            except queue.Empty:
                pass


def process_feed(wavs, workers: int, batch: int):
    """The job's feeder: ``workers`` processes filling shared batch buffers; yields each batch's samples."""
    plans = [FilePlan(i, wav, tuple(plan_windows(frames, WINDOW, HOP)), WINDOW) for i, (wav, frames) in
             enumerate(wavs)]
    for made in WindowFeeder(plans, batch_windows=batch, workers=workers, buffers=4).batches():
        yield made.samples
        made.release()


def delivered(feed, max_seconds: float) -> tuple[float, int]:
    """``(seconds, windows)`` to take the batches of ``feed``: all of them, or those of the first
    ``max_seconds`` (a starved feeder would otherwise take many minutes)."""
    started = time.perf_counter()
    windows = 0
    for samples in feed:
        windows += len(samples)
        if time.perf_counter() - started > max_seconds:
            break
    seconds = time.perf_counter() - started
    feed.close()
    return seconds, windows


def spin(stop: threading.Event) -> None:
    """Run Python without pause until ``stop`` is set: a CUDA launch loop's share of the GIL."""
    while not stop.is_set():
        sum(range(200))


def beside_spinner(work):
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        return work()
    finally:
        stop.set()
        spinner.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=8, help="passes over the clips (page cache warm)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="at most this long per case and round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wavs = decoded_wavs(Path(tmp), args.files) * args.repeat
        feeds = {"threads (before)": thread_feed, "processes (the job's feeder)": process_feed}
        delivered(process_feed(wavs[:50], args.workers, args.batch), args.max_seconds)  # warm: imports, page cache
        rates: dict = {(name, case): [] for name in feeds for case in ("alone", "beside")}
        for _ in range(args.rounds):
            for name, feed in feeds.items():
                def take():
                    return delivered(feed(wavs, args.workers, args.batch), args.max_seconds)

                seconds, windows = take()
                rates[(name, "alone")].append(windows / seconds)
                seconds, windows = beside_spinner(take)
                rates[(name, "beside")].append(windows / seconds)
    median = {key: float(np.median(values)) for key, values in rates.items()}
    print(f"{len(wavs)} decoded short clips ({args.files} distinct, {args.repeat} passes), batches of "
          f"{args.batch}, {args.workers} workers, {os.cpu_count()} cores, Python switch interval "
          f"{sys.getswitchinterval() * 1000:g} ms, median of {args.rounds} rounds")
    print("| feeder | windows/s alone | windows/s beside a busy launch thread | ratio |")
    print("|---|---|---|---|")
    for name in feeds:
        alone, beside = median[(name, "alone")], median[(name, "beside")]
        print(f"| {name} | {alone:,.0f} | {beside:,.0f} | {beside / alone:.3f} |")
    alone, beside = median[(list(feeds)[1], "alone")], median[(list(feeds)[1], "beside")]
    per_core = alone / args.workers
    print(f"feeder per worker core: {per_core:,.0f} windows/s; a GPU at 5,000 windows/s needs "
          f"{int(np.ceil(5000 / per_core))} such cores")
    print(f"feeder: {alone:,.0f} windows/s alone, {beside:,.0f} windows/s beside a busy launch thread "
          f"(ratio {beside / alone:.2f})")


if __name__ == "__main__":
    main()
