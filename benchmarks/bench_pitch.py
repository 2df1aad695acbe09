"""Which pitch model the ``pitch`` extractor wraps: torchcrepe (full and tiny) against torchfcpe, on speed and
accuracy, each called as its package documents, on the same 16 kHz audio, torch on one thread.

Accuracy is measured two ways: on plucked-string notes of known frequency (Karplus-Strong, G2 to A4: a played
note whose f0 is not in doubt), the median error in cents over the frames each model calls voiced; on real speech
(espeak-ng's sentence and the ALSA channel names), against librosa's ``pyin`` (an independent, non-neural
tracker), the median cents difference on frames both call voiced and the share of pyin's voiced frames each also
calls voiced. Speed is audio seconds per wall second, the median of three runs.

torchfcpe is not a dependency (it lost here: its input GroupNorm normalises over the whole file, so a file cannot
be streamed and equal its own call); ``pip install torchfcpe==0.0.4 einops local-attention`` to include it.

Usage: python benchmarks/bench_pitch.py [--repeats 3]
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.inputs.media import resample  # noqa: E402
from audiofeat.inputs.wav import read_wav  # noqa: E402
from audiofeat.testing.media import plucked_note, spoken_sentence  # noqa: E402

RATE = 16000
NOTES = {"G2": 98.0, "D3": 146.83, "A3": 220.0, "E4": 329.63, "A4": 440.0}


def speech_clips(folder: Path) -> list[np.ndarray]:
    paths = sorted(Path("/usr/share/sounds/alsa").glob("*_*.wav"))
    paths += [p for p in [spoken_sentence(folder / "sentence.wav")] if p]
    clips = []
    for path in paths:
        y, sr = read_wav(str(path))
        clips.append(resample(y if y.ndim == 1 else y.mean(axis=1), sr, RATE).astype(np.float32))
    return clips


def crepe(capacity: str):
    import torch
    import torchcrepe

    def call(audio):
        f0, periodicity = torchcrepe.predict(torch.from_numpy(audio)[None], RATE, 160, 50.0, 1100.0, capacity,
                                             decoder=torchcrepe.decode.weighted_argmax, return_periodicity=True,
                                             batch_size=512)
        f0, periodicity = f0[0].numpy(), periodicity[0].numpy()
        return np.where(periodicity >= 0.21, f0, np.nan)  # torchcrepe's own threshold.At(.21) on periodicity
    return call


def fcpe():
    import torch
    from torchfcpe import spawn_bundled_infer_model

    model = spawn_bundled_infer_model(device="cpu")

    def call(audio):
        f0 = model.infer(torch.from_numpy(audio)[None, :, None], sr=RATE, decoder_mode="local_argmax",
                         threshold=0.006, f0_min=50, f0_max=1100, interp_uv=False)[0, :, 0].numpy()
        return np.where(f0 > 0, f0, np.nan)
    return call


def pyin(audio: np.ndarray) -> np.ndarray:
    import librosa

    f0, _, _ = librosa.pyin(audio, fmin=50, fmax=1100, sr=RATE, frame_length=1024, hop_length=160)
    return f0


def cents(a, b):
    return np.abs(1200 * np.log2(a / b))


def agreement(track: np.ndarray, reference: np.ndarray) -> tuple[list, int, int]:
    n = min(track.shape[0], reference.shape[0])
    track, reference = track[:n], reference[:n]
    both = ~np.isnan(track) & ~np.isnan(reference)
    return list(cents(track[both], reference[both])), int(both.sum()), int((~np.isnan(reference)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    np.random.seed(0)  # torchcrepe dithers its decoder's weights from NumPy's global generator, once
    folder = Path(tempfile.mkdtemp())
    notes = {name: plucked_note(f0, sr=RATE) for name, f0 in NOTES.items()}
    speech = speech_clips(folder)
    references = [pyin(clip) for clip in speech]
    audio_s = (sum(c.shape[0] for c in speech) + sum(n.shape[0] for n in notes.values())) / RATE
    print(f"{len(notes)} notes, {len(speech)} speech clips, {audio_s:.1f} audio seconds, torch on 1 thread\n")
    print("| model | x realtime (1 core) | notes: median cents error | notes: voiced frames within 50 cents | "
          "notes: voiced share | speech vs pyin: median cents | speech: pyin-voiced frames also voiced |")
    print("|---|---|---|---|---|---|---|")
    for label, make in (("torchcrepe full", lambda: crepe("full")), ("torchcrepe tiny", lambda: crepe("tiny")),
                        ("torchfcpe", fcpe)):
        try:
            call = make()
        except ModuleNotFoundError as missing:  # torchfcpe is not a dependency: pip install torchfcpe==0.0.4
            print(f"| {label} | not installed ({missing.name}) | | | | | |")
            continue
        call(notes["A3"])  # load and warm up
        walls = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            tracks = {name: call(audio) for name, audio in notes.items()}
            speech_tracks = [call(clip) for clip in speech]
            walls.append(time.perf_counter() - started)
        errors = [e for name, t in tracks.items() for e in cents(t[~np.isnan(t)], NOTES[name])]
        voiced = sum((~np.isnan(t)).sum() for t in tracks.values()) / sum(t.shape[0] for t in tracks.values())
        diffs, both, ref = [], 0, 0
        for track, reference in zip(speech_tracks, references):
            d, b, r = agreement(track, reference)
            diffs += d
            both, ref = both + b, ref + r
        within = float(np.mean(np.array(errors) < 50))
        print(f"| {label} | {audio_s / statistics.median(walls):.1f} | {np.median(errors):.1f} | {within:.2f} | "
              f"{voiced:.2f} | {np.median(diffs):.1f} | {both / max(1, ref):.2f} |")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
