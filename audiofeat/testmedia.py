"""Small media files made with ffmpeg's lavfi sources, for the demo, the tests and the benchmarks.

ffmpeg is the one on PATH, else the static binary of the ``imageio-ffmpeg`` wheel (a pip-only install has it).
Arguments go to ffmpeg as a list, never through a shell.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .decode import ffmpeg_executable


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
