"""WAV artifacts: mono WAVs written a chunk at a time (RF64 beyond RIFF's 4 GiB), read whole or a span at a
time."""
from __future__ import annotations

import errno
import io
import os
from contextlib import nullcontext
from typing import Callable, ContextManager, Iterable

import numpy as np

COPY_BLOCK = 1 << 18  # samples copied at a time when a WAV becomes RF64
Timer = Callable[[str], ContextManager]


def _untimed(_name: str) -> ContextManager:
    return nullcontext()


# audio.wav_subtype -> soundfile's subtype. Integer PCM clips samples beyond [-1, 1).
WAV_SUBTYPES = {"float32": "FLOAT", "int16": "PCM_16", "int24": "PCM_24"}


def wav_bytes(y: np.ndarray, sr: int, subtype: str = "float32") -> bytes:
    """Mono WAV file contents, samples stored as ``subtype`` (a key of :data:`WAV_SUBTYPES`)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format="WAV", subtype=WAV_SUBTYPES[subtype])
    return buffer.getvalue()


# Sample bytes a WAV file's 32-bit sizes can count, less room for its header; longer audio is written as RF64
# (EBU Tech 3306: WAV with 64-bit sizes; soundfile, FFmpeg and most tools read it).
RIFF_DATA_LIMIT = 0xFFFFFFFF - (1 << 16)
_SAMPLE_BYTES = {"float32": 4, "int16": 2, "int24": 3}


def write_wav(path: str | os.PathLike, chunks: Iterable[np.ndarray], *, sr: int, subtype: str = "float32",
              timer: Timer = _untimed) -> int:
    """Write mono float32 ``chunks`` as one WAV file (samples stored as ``subtype``) and return the number of
    samples. The bytes are those :func:`wav_bytes` gives for the concatenation, while they fit in a WAV file."""
    import soundfile as sf

    out = sf.SoundFile(path, "w", sr, 1, WAV_SUBTYPES[subtype], format="WAV")
    written = 0
    try:
        for chunk in chunks:
            if out.format == "WAV" and (written + chunk.shape[0]) * _SAMPLE_BYTES[subtype] > RIFF_DATA_LIMIT:
                out = _reopen_as_rf64(out, path)
            with timer("write"):
                out.write(chunk)
            written += chunk.shape[0]
        out.close()
    except sf.SoundFileRuntimeError as exc:
        raise _write_error(path) from exc
    finally:
        out.close()
    return written


def _write_error(path: str | os.PathLike) -> OSError:
    """libsndfile reports a failed write without its errno; writing our own samples to a local file fails only
    for the machine's reasons, so it is an OSError (a fault): the disk is full, or an I/O error."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(folder)
        full = st.f_bavail * st.f_frsize < 4 * COPY_BLOCK * 4
    except OSError:
        full = False
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def _reopen_as_rf64(out, path):
    """Rewrite what a WAV file holds so far as RF64 at the same path; returns it open for appending."""
    import soundfile as sf

    out.close()
    riff = f"{path}.riff"
    os.replace(path, riff)
    rf64 = sf.SoundFile(path, "w", out.samplerate, 1, out.subtype, format="RF64")
    # int32 for PCM: 16- and 24-bit samples pass through unchanged, whatever the float scaling.
    dtype = "float32" if out.subtype == "FLOAT" else "int32"
    for block in sf.blocks(riff, blocksize=COPY_BLOCK, dtype=dtype):
        rf64.write(block)
    os.unlink(riff)
    return rf64


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a whole WAV artifact: ``(y [shape=(n,)] float32, sample rate)``. For short files; long ones are read
    a span at a time through :class:`WavReader`."""
    import soundfile as sf

    with open(path, "rb") as handle:  # a missing or unreadable artifact is an OSError (a fault), not sf's error
        y, sr = sf.read(handle, dtype="float32", always_2d=False)
    return y, sr


class WavReader:
    """Spans of a mono WAV artifact, read on demand: ``reader.read(start, stop)`` -> float32 ``[shape=(stop -
    start,)]``. Memory follows the spans read, not the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        import soundfile as sf

        self._handle = open(path, "rb")  # a missing artifact is an OSError (a fault), not sf's error
        self._file = sf.SoundFile(self._handle)
        self.frames, self.samplerate = self._file.frames, self._file.samplerate

    def read(self, start: int, stop: int) -> np.ndarray:
        self._file.seek(start)
        return self._file.read(max(0, stop - start), dtype="float32", always_2d=False)

    def close(self) -> None:
        self._file.close()
        self._handle.close()

    def __enter__(self) -> "WavReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
