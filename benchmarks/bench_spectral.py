"""Benchmark: the spectral extractor's summary against librosa's own calls, single-threaded, 48 kHz.

librosa is called as an expert would: one magnitude STFT passed as ``S=`` to centroid, bandwidth, rolloff, flatness,
contrast and chroma (at tuning 0, as ours), ``rms`` and ``zero_crossing_rate`` of the signal, one
``onset_strength``, ``onset_detect`` and ``tempo`` of that envelope, then numpy's statistics of every row. Prints
x realtime of each, their ratio (median of alternating rounds) and the largest difference of the summaries.

Usage: python benchmarks/bench_spectral.py [--rounds 5] [--quick]
"""
import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_features import SR, test_signal  # noqa: E402


def librosa_spectral(y) -> dict:
    import librosa

    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    rows = {"centroid_hz": librosa.feature.spectral_centroid(S=S, sr=SR)[0],
            "bandwidth_hz": librosa.feature.spectral_bandwidth(S=S, sr=SR)[0],
            "rolloff_hz": librosa.feature.spectral_rolloff(S=S, sr=SR)[0],
            "flatness": librosa.feature.spectral_flatness(S=S)[0],
            "rms": librosa.feature.rms(y=y)[0], "zcr": librosa.feature.zero_crossing_rate(y)[0]}
    out = {name: _stats(row[None])[0] for name, row in rows.items()}
    out["contrast_db"] = _stats(librosa.feature.spectral_contrast(S=S, sr=SR))
    out["chroma"] = _stats(librosa.feature.chroma_stft(S=S ** 2, sr=SR, tuning=0.0))
    envelope = librosa.onset.onset_strength(y=y, sr=SR)
    out["onsets"] = len(librosa.onset.onset_detect(onset_envelope=envelope, sr=SR))
    out["tempo_bpm"] = float(librosa.feature.tempo(onset_envelope=envelope, sr=SR)[0])
    return out


def _stats(X) -> np.ndarray:
    """Rows of (mean, std, min, max, p10, p25, median, p75, p90), as audiofeat's STAT_NAMES."""
    X = X.astype(np.float64)
    return np.column_stack([X.mean(1), X.std(1), X.min(1), X.max(1),
                            *np.percentile(X, [10, 25, 50, 75, 90], axis=1)])


def largest_difference(ours: dict, theirs: dict) -> dict:
    """The largest relative difference of the one-row descriptors, the largest absolute one (dB, chroma units)
    of contrast and chroma, and whether the onset count and tempo are equal."""
    from audiofeat.dsp.spectrum import STAT_NAMES

    relative = max(abs(ours[name][stat] - theirs[name][i]) / max(abs(theirs[name][i]), 1e-9)
                   for name in ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "rms", "zcr")
                   for i, stat in enumerate(STAT_NAMES))
    absolute = {name: float(np.max(np.abs(np.column_stack([ours[name][s] for s in STAT_NAMES]) - theirs[name])))
                for name in ("contrast_db", "chroma")}
    return {"relative": relative, **absolute,
            "onsets_equal": ours["onsets"] == theirs["onsets"], "tempo_equal": ours["tempo_bpm"] == theirs["tempo_bpm"]}


def bench(rounds: int, lengths) -> list:
    from audiofeat.dsp.descriptors import spectral_summary

    rows = []
    for seconds in lengths:
        y = test_signal(seconds)
        ours, theirs = spectral_summary(y, sr=SR), librosa_spectral(y)  # warm: plans, filters, numba
        t_lib, t_ours = [], []
        for _ in range(rounds):  # alternate, so drift hits both sides alike
            start = time.perf_counter()
            librosa_spectral(y)
            t_lib.append(time.perf_counter() - start)
            start = time.perf_counter()
            spectral_summary(y, sr=SR)
            t_ours.append(time.perf_counter() - start)
        rows.append((seconds, statistics.median(t_lib), statistics.median(t_ours), largest_difference(ours, theirs)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="60 s only, 3 rounds")
    args = parser.parse_args()
    lengths = (60,) if args.quick else (60, 600)
    rounds = 3 if args.quick else args.rounds
    print(f"single-threaded, median of {rounds} alternating rounds, 48 kHz")
    print("| audio | librosa x RT | audiofeat x RT | speed-up | largest relative difference (one-row) "
          "| contrast dB | chroma | onsets equal | tempo equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seconds, lib, ours, diff in bench(rounds, lengths):
        print(f"| {seconds:.0f} s | {seconds / lib:,.0f} | {seconds / ours:,.0f} | {lib / ours:.2f}x "
              f"| {diff['relative']:.1e} | {diff['contrast_db']:.1e} | {diff['chroma']:.1e} "
              f"| {diff['onsets_equal']} | {diff['tempo_equal']} |")


if __name__ == "__main__":
    main()
