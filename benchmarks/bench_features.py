"""Benchmark: audiofeat's feature core against librosa, single-threaded, on the same 48 kHz signals.

Prints a table per preset and length: x realtime of librosa (computed as an expert would: one melspectrogram,
power_to_db, mfcc(S=...), numpy statistics) and of audiofeat.dsp.feature_summary, their ratio, and the bare
pyFFTW float32 real-FFT pass over the same frames (the floor). Then multi-thread scaling over many files and
the cold-start cost of a fresh process.

Usage: python benchmarks/bench_features.py [--rounds 7] [--quick]
"""
import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

SR = 48000


def test_signal(seconds: float) -> np.ndarray:
    """Pink-ish noise with a tone sweep and gaps (a real recording's dynamics, any length)."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = 0.1 * np.cumsum(rng.standard_normal(n)) / np.sqrt(np.arange(1, n + 1))
    y += 0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(t)) * t) * (np.sin(0.5 * t) > -0.5)
    return (y / np.abs(y).max() * 0.8).astype(np.float32)


def librosa_features(y, p):
    import librosa

    S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"],
                                       fmin=p["fmin"], fmax=p["fmax"])
    L = librosa.power_to_db(S)
    M = librosa.feature.mfcc(S=L, n_mfcc=p["n_mfcc"])
    out = {}
    for name, X in (("mel", L), ("mfcc", M)):
        out[name] = (X.mean(1), X.std(1), X.min(1), X.max(1), np.percentile(X, [10, 25, 50, 75, 90], axis=1))
    out["delta"] = librosa.feature.delta(M).mean(1)
    return out


def fft_floor(y, p):
    """Bare pyFFTW float32 rfft of every (pre-framed, windowed) frame: returns a timing function."""
    import pyfftw

    n_fft, hop = p["n_fft"], p["hop_length"]
    padded = np.pad(y, n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = pyfftw.empty_aligned((n_frames, n_fft), dtype="float32")
    frames[:] = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    out = pyfftw.empty_aligned((n_frames, n_fft // 2 + 1), dtype="complex64")
    plan = pyfftw.FFTW(frames, out, axes=(1,), flags=("FFTW_MEASURE",), threads=1)
    frames[:] = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return plan


def median_time(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_single(rounds: int, lengths):
    from audiofeat import dsp

    rows = []
    for preset_name, preset in dsp.PRESETS.items():
        for seconds in lengths:
            y = test_signal(seconds)
            plan = fft_floor(y, preset)
            dsp.feature_summary(y, sr=SR, **preset)  # warm: plans, filters, numba
            librosa_features(y, preset)
            t_lib, t_ours, t_fft = [], [], []
            for _ in range(rounds):  # alternate, so drift hits both sides alike
                t_lib.append(median_time(lambda: librosa_features(y, preset), 1))
                t_ours.append(median_time(lambda: dsp.feature_summary(y, sr=SR, **preset), 1))
                t_fft.append(median_time(plan, 1))
            lib, ours, fft = (statistics.median(v) for v in (t_lib, t_ours, t_fft))
            rows.append((preset_name, seconds, lib, ours, fft))
    return rows


def bench_threads(files: int = 32, seconds: float = 30.0):
    from audiofeat import dsp

    signals = [test_signal(seconds + i * 0.01) for i in range(files)]
    preset = dsp.PRESETS["librosa"]
    results = {}
    for threads in range(1, (os.cpu_count() or 1) + 1):
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda y: dsp.feature_summary(y, sr=SR, **preset), signals[:threads]))  # warm per thread
            start = time.perf_counter()
            list(pool.map(lambda y: dsp.feature_summary(y, sr=SR, **preset), signals))
            results[threads] = files * seconds / (time.perf_counter() - start)
    return results


COLD = ("import time; t=time.perf_counter(); import numpy as np; from audiofeat import dsp; "
        "dsp.feature_summary(np.random.default_rng(0).standard_normal(48000).astype('float32'), sr=48000); "
        "print(time.perf_counter()-t)")


def cold_start():
    warm = float(subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True).stdout)
    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "NUMBA_CACHE_DIR": empty, "AUDIOFEAT_FFTW_WISDOM": os.path.join(empty, "w.pkl")}
        cold = float(subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True,
                                    env=env).stdout)
    return warm, cold


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="60 s only, 3 rounds")
    args = parser.parse_args()
    lengths = (60,) if args.quick else (60, 600)
    rounds = 3 if args.quick else args.rounds
    rows = bench_single(rounds, lengths)
    print(f"single-threaded, median of {rounds} alternating rounds, 48 kHz")
    print("| preset | audio | librosa x RT | audiofeat x RT | speed-up | bare FFT x RT | audiofeat / FFT time |")
    print("|---|---|---|---|---|---|---|")
    for preset, seconds, lib, ours, fft in rows:
        print(f"| {preset} | {seconds:.0f} s | {seconds / lib:,.0f} | {seconds / ours:,.0f} | {lib / ours:.2f}x "
              f"| {seconds / fft:,.0f} | {ours / fft:.2f}x |")
    scaling = bench_threads()
    print("\nmany files (32 x 30 s, librosa preset), threads in one process:")
    print("| threads | x realtime | scaling |")
    print("|---|---|---|")
    for threads, xrt in scaling.items():
        print(f"| {threads} | {xrt:,.0f} | {xrt / scaling[1]:.2f}x |")
    warm, cold = cold_start()
    print(f"\ncold start in a fresh process (import + first 1 s call): numba cache warm {warm:.2f} s, "
          f"cold {cold:.2f} s")


if __name__ == "__main__":
    main()
