"""What storing decoded WAVs as int24 or int16 instead of float32 changes: store size, features, embeddings.

Runs the extractors (through ``audiofeat.extract``, seeded random CLAP weights) on the machine's real recordings
(Debian's alsa and freedesktop sounds) once per ``audio.wav_subtype`` and compares each with float32.

Usage: python benchmarks/bench_wav_subtype.py
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import audiofeat  # noqa: E402

RECORDINGS = sorted(Path("/usr/share/sounds/alsa").glob("*.wav")) + sorted(
    Path("/usr/share/sounds/freedesktop/stereo").glob("*.oga"))


def run(subtype: str, cache: Path):
    return audiofeat.extract(RECORDINGS, extractors=["features", "clap"], cache={"dir": str(cache)},
                             audio={"wav_subtype": subtype}, perf={"threads": 2},
                             clap={"checkpoint": "", "allow_random_weights": True})


def main():
    with tempfile.TemporaryDirectory(prefix="audiofeat-subtype-") as tmp:
        results = {s: run(s, Path(tmp) / s) for s in ("float32", "int24", "int16")}
        ok = [i for i, m in enumerate(results["float32"].manifests) if m.status == "ok"]
        seconds = sum(results["float32"].manifests[i].audio.duration_s for i in ok)
        print(f"{len(ok)} real recordings, {seconds:.1f} s of audio; differences against float32 WAVs:")
        print("| wav_subtype | WAV MB per audio hour (48 kHz) | max abs diff, MFCC means | max abs diff, log-mel "
              "means (dB) | min cosine, CLAP embedding |")
        print("|---|---|---|---|---|")
        ref = results["float32"]
        for subtype, result in results.items():
            size = sum(Path(result.manifests[i].audio.wav).stat().st_size for i in ok) / seconds * 3600 / 1e6
            mfcc = max(np.abs(np.subtract(result.manifests[i].blocks["features"]["mfcc"]["mean"],
                                          ref.manifests[i].blocks["features"]["mfcc"]["mean"])).max() for i in ok)
            mel = max(np.abs(np.subtract(result.manifests[i].blocks["features"]["mel"]["mean"],
                                         ref.manifests[i].blocks["features"]["mel"]["mean"])).max() for i in ok)
            cosine = min(float(np.dot(result.embeddings[i], ref.embeddings[i])) for i in ok)
            print(f"| {subtype} | {size:.0f} | {mfcc:.2e} | {mel:.2e} | {cosine:.6f} |")


if __name__ == "__main__":
    main()
