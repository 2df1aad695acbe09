"""Small media files made with ffmpeg's lavfi sources, for the demo, the tests and the benchmarks.

ffmpeg is the one on PATH, else the static binary of the ``imageio-ffmpeg`` wheel (a pip-only install has it).
Arguments go to ffmpeg as a list, never through a shell.
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import tempfile
from pathlib import Path

from ..inputs.media import ffmpeg_executable


@contextlib.contextmanager
def scratch_folder(workdir: str | os.PathLike | None, prefix: str):
    """A benchmark's working folder: ``workdir`` (created, kept afterwards) when given, else a temporary folder
    that is removed afterwards, since a benchmark's media and stores can come to gigabytes."""
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg with ``args`` (overwrite, quiet); raises ``RuntimeError`` with ffmpeg's message on failure."""
    cmd = [ffmpeg_executable(), "-y", "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.strip()[-500:]}")


def make_audio(path: str | os.PathLike, *, seconds: float, sr: int = 48000, channels: int = 1,
               source: str = "sine", frequency: float = 440.0, codec_args: tuple[str, ...] = ()) -> Path:
    """An audio file of ``seconds`` from a lavfi source (``sine``, ``noise``, ``silence`` or ``chirp``)."""
    lavfi = {
        "sine": f"sine=frequency={frequency}:sample_rate={sr}:duration={seconds}",
        "noise": f"anoisesrc=color=pink:sample_rate={sr}:duration={seconds}:amplitude=0.3:seed=7",
        "silence": f"anullsrc=channel_layout=mono:sample_rate={sr},atrim=duration={seconds}",
        "chirp": f"aevalsrc='0.4*sin(2*PI*(200+400*t)*t)':sample_rate={sr}:duration={seconds}",
    }[source]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg("-f", "lavfi", "-i", lavfi, "-ac", str(channels), "-ar", str(sr), *codec_args, str(path))
    return path


def make_video(path: str | os.PathLike, *, seconds: float, sr: int = 44100, channels: int = 2,
               with_audio: bool = True, codec_args: tuple[str, ...] = ()) -> Path:
    """A tiny video (64x48 test pattern) with a tone track, or without audio."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:duration={seconds}"]
    if with_audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate={sr}:duration={seconds}",
                 "-ac", str(channels), "-shortest"]
    run_ffmpeg(*args, *codec_args, str(path))
    return path


def make_demo_set(out_dir: str | os.PathLike) -> list[Path]:
    """The demo set: six clips (audio and video containers, mono and stereo, 16 to 48 kHz), one silent file and
    one file that is not media. Existing files are kept, so running it twice is cheap."""
    out = Path(out_dir)
    specs = [
        ("tone_stereo_44k.mp3", lambda p: make_audio(p, seconds=3, sr=44100, channels=2, frequency=440)),
        ("noise_16k.flac", lambda p: make_audio(p, seconds=2, sr=16000, source="noise")),
        ("chirp_48k.ogg", lambda p: make_audio(p, seconds=4, source="chirp", codec_args=("-c:a", "libvorbis"))),
        ("long/sweep_22k.m4a", lambda p: make_audio(p, seconds=24, sr=22050, source="chirp")),
        ("video/testsrc.mp4", lambda p: make_video(p, seconds=3)),
        ("video/testsrc.webm", lambda p: make_video(p, seconds=2, sr=48000, codec_args=("-c:a", "libopus"))),
        ("silence.wav", lambda p: make_audio(p, seconds=2, source="silence")),
    ]
    made = []
    for name, build in specs:
        path = out / name
        if not path.exists():
            build(path)
        made.append(path)
    bad = out / "not_media.mp3"
    if not bad.exists():
        bad.write_text("this is a text file with a media extension\n")
    made.append(bad)
    return made


def real_sounds(sr: int = 48000) -> list:
    """Mono float32 recordings at ``sr`` from the machine: Debian's alsa and freedesktop sounds and espeak-ng
    speech (an empty list when none are installed)."""
    import shutil
    import tempfile

    import numpy as np
    import soundfile as sf
    import soxr

    def at_rate(y, rate):
        return soxr.resample(y, rate, sr).astype(np.float32) if rate != sr else y.astype(np.float32)

    sounds = []
    for path in sorted(Path("/usr/share/sounds").rglob("*")):
        if path.suffix in (".wav", ".oga", ".ogg") and path.is_file():
            try:
                y, rate = sf.read(path, dtype="float32", always_2d=True)
            except RuntimeError:
                continue
            sounds.append(at_rate(y.mean(axis=1), rate))
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.TemporaryDirectory() as tmp:
            for i, text in enumerate(("The quick brown fox jumps over the lazy dog.",
                                      "Audio features and embeddings for a million clips, on one laptop.",
                                      "Every artifact is stored under its content hash.")):
                out = Path(tmp) / f"s{i}.wav"
                subprocess.run([espeak, "-w", str(out), text], check=True)
                y, rate = sf.read(out, dtype="float32")
                sounds.append(at_rate(y, rate))
    return [s for s in sounds if len(s) > sr // 10]


def benchmark_sets(folder: str | os.PathLike, n_short: int, n_long: int, sr: int = 48000, *,
                   long_seconds: int = 130) -> tuple[list[Path], list[Path]]:
    """A short set (clips of 1 to 15 s) and a long set (``long_seconds`` and longer) of WAVs at ``sr``, stitched
    from the machine's real recordings (with gaps and a little noise), or from tones where none are installed."""
    import numpy as np
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sounds = real_sounds(sr) or [(0.3 * np.sin(2 * np.pi * f * np.arange(3 * sr) / sr)).astype(np.float32)
                                 for f in (220, 440, 880)]

    def stitched(n_samples, gaps):
        parts, total = [], 0
        while total < n_samples:
            parts.append(sounds[rng.integers(len(sounds))])
            if gaps:
                parts.append(np.zeros(int(rng.uniform(0, 1.5) * sr), np.float32))
            total = sum(len(p) for p in parts)
        y = np.concatenate(parts)[:n_samples] + 0.01 * rng.standard_normal(n_samples)
        return np.clip(y, -1, 1).astype(np.float32)

    short, long = [], []
    for i in range(n_short):
        path = folder / f"short_{i:04d}.wav"
        sf.write(path, stitched(int(rng.uniform(1.0, 15.0) * sr), gaps=False), sr)
        short.append(path)
    for i in range(n_long):
        path = folder / f"long_{i:03d}.wav"
        sf.write(path, stitched((long_seconds + 20 * i) * sr, gaps=True), sr)
        long.append(path)
    return short, long


def write_tone_clips(folder: str | os.PathLike, count: int, *, seed: int = 0, seconds: float = 1.0,
                     sr: int = 16000) -> list[Path]:
    """``count`` distinct short 16-bit WAVs (a random tone plus noise each), named ``clip_<seed>_<i>.wav``."""
    import numpy as np
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(count):
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"clip_{seed}_{i:05d}.wav"
        sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
        paths.append(path)
    return paths


SENTENCE = "The quick brown fox jumps over the lazy dog, twice."


def spoken_sentence(path: str | os.PathLike) -> Path | None:
    """:data:`SENTENCE` spoken by espeak-ng into the WAV ``path`` (22.05 kHz mono); None without espeak-ng."""
    import shutil

    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    subprocess.run([exe, "-w", str(path), SENTENCE], check=True)
    return Path(path)


def plucked_note(f0: float, *, seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A plucked string at ``f0`` Hz (Karplus-Strong, the fractional delay by linear interpolation): a played
    note whose fundamental is known, ``[shape=(seconds * sr,)]`` float32 peaking at 0.5."""
    import numpy as np

    period = sr / f0 - 0.5  # the loop's two-point average delays by half a sample
    n, frac = int(period), period - int(period)
    line = list(np.random.default_rng(seed).uniform(-1, 1, n + 2))
    out = np.empty(int(seconds * sr), np.float32)
    for i in range(out.shape[0]):
        delayed = (1 - frac) * line[-n] + frac * line[-n - 1]
        previous = (1 - frac) * line[-n - 1] + frac * line[-n - 2]
        line.append(0.996 * 0.5 * (delayed + previous))
        out[i] = line[-1]
    return 0.5 * out / np.abs(out).max()


def write_seeded_checkpoint(path: str | os.PathLike, *, model_name: str = "HTSAT-tiny", seed: int = 0,
                            extra: dict | None = None) -> Path:
    """Save a seeded random CLAP audio tower as a LAION-format checkpoint (``{"state_dict": {"module.<key>":
    tensor}}``): the file format users point ``clap.checkpoint`` at, for tests and benchmarks that cannot
    download LAION's. ``extra`` tensors (``{key: tensor}``) are saved beside the tower's, as LAION's files also
    hold a text tower. Returns ``path``."""
    import torch

    from ..clap.forward import build_audio_tower

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = build_audio_tower(model_name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**tower.state_dict(), **(extra or {})}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def ebur128_reference(path: str | os.PathLike) -> dict:
    """What FFmpeg's ``ebur128`` filter (the EBU R128 meter) reads on ``path``'s first audio stream: its last
    ``lavfi.r128`` values, ``{"I": LUFS or None, "LRA": LU, "true_peaks": dBFS per channel}`` (3 decimals;
    its summary prints one)."""
    cmd = [ffmpeg_executable(), "-hide_banner", "-nostats", "-nostdin", "-i", str(path), "-map", "0:a:0",
           "-af", "ebur128=peak=true:metadata=1,ametadata=print:file=-", "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    last: dict[str, str] = {}
    for line in done.stdout.splitlines():
        if line.startswith("lavfi.r128."):
            key, _, value = line[len("lavfi.r128."):].partition("=")
            last[key] = value
    peaks = [float(last[k]) for k in sorted(k for k in last if k.startswith("true_peaks_ch"))]
    measured = "I" in last and float(last["I"]) > -70  # -70: no block measured (shorter than 400 ms, silence)
    return {"I": float(last["I"]) if measured else None, "LRA": float(last.get("LRA", 0.0)),
            "true_peaks": [20 * math.log10(p) if p > 0 else None for p in peaks]}
