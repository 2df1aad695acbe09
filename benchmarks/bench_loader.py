"""Benchmark CLAP preparation (decode + model windows) in loader threads, alone and beside a GIL-bound thread.

Why: on a GPU the forward thread spends much of its time in Python, launching kernels, while the loader threads
decode and cut windows. A thread that needs the GIL back after a C call waits up to the interpreter's switch
interval (5 ms by default) whenever another thread is running Python, so loaders that hand the GIL back and forth
many times per file can starve the GPU. This measures how much, on this machine's cores, for the same files:

1. loader threads alone;
2. beside a consumer that holds the GIL for ``--python-ms`` per file it takes (the forward loop's Python work);
3. beside a thread that runs Python without pause, at switch intervals of 5, 1 and 0.2 ms.

Prints files/s and windows/s per case, and how fast the Python-bound thread ran against running alone.

Usage: python benchmarks/bench_loader.py [--files 48] [--threads N] [--python-ms 2]
"""
import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.clap.embed import ordered_prefetch  # noqa: E402
from audiofeat.clap import MODEL_INPUT_SAMPLES, MODEL_SAMPLE_RATE  # noqa: E402
from audiofeat.clap.windows import model_inputs, plan_windows  # noqa: E402
from audiofeat.decode import load_audio  # noqa: E402
from audiofeat.testing.media import benchmark_sets  # noqa: E402

WINDOW, HOP = 10 * MODEL_SAMPLE_RATE, 5 * MODEL_SAMPLE_RATE


def prepare(path: Path):
    _, y = load_audio(str(path), target_sr=MODEL_SAMPLE_RATE)
    return model_inputs(y, plan_windows(len(y), WINDOW, HOP), MODEL_INPUT_SAMPLES)


def python_for(seconds: float) -> None:
    """Pure Python work (GIL held) for about ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def load_all(files, threads: int, python_s_per_file: float = 0.0) -> tuple[float, int]:
    """Seconds to prepare every file on ``threads`` loader threads, consumed by this thread, which works
    ``python_s_per_file`` in Python for each file it takes; returns (seconds, windows)."""
    prepared: queue.Queue = queue.Queue(maxsize=4 * threads)

    def loader():
        for inputs in ordered_prefetch(prepare, files, workers=threads, depth=2 * threads):
            prepared.put(inputs)
        prepared.put(None)

    started = time.perf_counter()
    thread = threading.Thread(target=loader, daemon=True)
    thread.start()
    windows = 0
    while (inputs := prepared.get()) is not None:
        windows += len(inputs)
        python_for(python_s_per_file)
    thread.join()
    return time.perf_counter() - started, windows


def spin(stop: threading.Event, counted: list) -> None:
    """Run Python without pause until ``stop`` is set (the GIL-bound thread); append the iterations done."""
    count = 0
    while not stop.is_set():
        sum(range(200))
        count += 1
    counted.append(count)


def spin_beside(work) -> tuple[float, float]:
    """Run ``work()`` while a thread spins; returns (seconds ``work`` took, the spinner's iterations per second)."""
    stop, counted = threading.Event(), []
    spinner = threading.Thread(target=spin, args=(stop, counted), daemon=True)
    spinner.start()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    stop.set()
    spinner.join()
    return seconds, counted[0] / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--python-ms", type=float, default=2.0)
    args = parser.parse_args()
    default_interval = sys.getswitchinterval()
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = benchmark_sets(Path(tmp) / "media", args.files, 0)
        load_all(files[:4], args.threads)  # warm: imports, page cache
        rows = []
        seconds, windows = load_all(files, args.threads)
        rows.append(("alone", seconds, windows, "-"))
        seconds, windows = load_all(files, args.threads, args.python_ms / 1000)
        rows.append((f"consumer holds the GIL {args.python_ms:g} ms per file", seconds, windows, "-"))
        _, solo = spin_beside(lambda: time.sleep(1.0))
        for interval in (default_interval, 0.001, 0.0002):
            sys.setswitchinterval(interval)
            loaded = []
            seconds, rate = spin_beside(lambda: loaded.append(load_all(files, args.threads)))
            rows.append((f"beside a Python-bound thread, switch interval {interval * 1000:g} ms", seconds,
                         loaded[0][1], f"{rate / solo:.2f}"))
        sys.setswitchinterval(default_interval)
    print(f"{len(files)} short clips (decode + CLAP windows), {args.threads} loader threads, {os.cpu_count()} cores")
    print("| case | files/s | windows/s | Python-bound thread's speed vs alone |")
    print("|---|---|---|---|")
    for case, seconds, windows, spin_share in rows:
        print(f"| {case} | {len(files) / seconds:,.1f} | {windows / seconds:,.1f} | {spin_share} |")


if __name__ == "__main__":
    main()
