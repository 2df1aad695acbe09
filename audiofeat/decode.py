"""Decoding: probe, decode the first audio stream, downmix to mono, resample once.

Two decoders give the same samples within resampler tolerance:

- ``pyav`` (default) decodes in-process with FFmpeg's libraries from the ``av`` wheel: no process per file.
- ``ffmpeg`` runs the ffmpeg command line through ``ffmpeg-python`` (the ``ffmpeg`` on PATH, else the static
  binary of the ``imageio-ffmpeg`` wheel), for builds with codecs or hardware decoders the wheel lacks.

Both hand native-rate float samples to the same downmix (channel mean, as ``librosa.to_mono``) and the same
single soxr resample (quality ``HQ``, librosa's default ``soxr_hq``).
"""
from __future__ import annotations

import errno
import io
import os
import shutil
from dataclasses import dataclass

import numpy as np

DECODE_VERSION = "1"  # bump when decoded samples change for the same input and parameters
RESAMPLER = "soxr_hq"


class DecodeError(RuntimeError):
    """A verdict on a file's bytes: they cannot be turned into audio samples. The message is one line naming the
    cause; the verdict is stored with the content key and reused while ``DECODE_VERSION`` is the same."""


class InputUnreadable(DecodeError):
    """The file cannot be opened (its permissions, say): that file's result, but a verdict on its state rather than
    its bytes, so it is not stored; fixing it changes the file's stat, and the next run tries it again."""


@dataclass(frozen=True)
class Probe:
    """What the container says about the input's first audio stream."""

    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str


def downmix(samples: np.ndarray) -> np.ndarray:
    """Channel mean. ``samples`` [shape=(channels, n)] -> [shape=(n,)] float32.

    Summed channel by channel in float64, in the order ``samples.mean(axis=0, dtype=np.float64)`` sums them, so
    the result is the same to the bit; numpy's buffered reduction over a strided (interleaved) channel axis is
    much slower.
    """
    if samples.shape[0] == 1:
        return samples[0].astype(np.float32, copy=False)
    total = samples[0].astype(np.float64)
    for channel in samples[1:]:
        total += channel
    total /= samples.shape[0]
    return total.astype(np.float32)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono ``y`` [shape=(n,)] once with soxr HQ; identity when the rates agree."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def _check_readable(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE):
            raise  # the machine's, not the file's: a fault
        raise InputUnreadable(f"cannot read file: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size == 0:
        raise DecodeError("empty file (0 bytes)")


def _first_line(exc: BaseException) -> str:
    """FFmpeg's own wording of an error (``strerror``, without errno and path), else the first line."""
    reason = getattr(exc, "strerror", None)
    if reason:
        return str(reason)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def decode_pyav(path: str) -> tuple[Probe, np.ndarray]:
    """Decode the first audio stream in-process. Returns the probe and native-rate ``(channels, n)`` float32."""
    import av

    _check_readable(path)
    container = _open_container(path)
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise DecodeError("no audio stream")
        codec = stream.codec_context
        sample_rate = int(codec.sample_rate or 0)
        declared = _declared_seconds(container, stream)
        # Frames are converted to float a run at a time (a run: frames of one sample format and channel count,
        # normally the whole stream), one numpy pass instead of several per frame of about a thousand samples.
        converted: list[np.ndarray] = []
        run: list[np.ndarray] = []
        run_key, run_channels = None, 0  # (sample format, channel layout) and channel count of ``run``

        def end_run() -> None:
            if run:
                converted.append(frame_to_float(np.concatenate(run, axis=1), run_key[0], run_channels))
                run.clear()

        n_decoded = largest_frame = 0
        try:
            for frame in container.decode(stream):
                key = (frame.format.name, frame.layout.name)
                if key != run_key:
                    end_run()
                    run_key, run_channels = key, len(frame.layout.channels)
                run.append(frame.to_ndarray())
                n_decoded += frame.samples
                largest_frame = max(largest_frame, frame.samples)
        except av.FFmpegError as exc:
            if not n_decoded:
                raise DecodeError(f"undecodable audio ({_first_line(exc)})") from None
            raise DecodeError(f"truncated or corrupt audio after {n_decoded} samples "
                              f"({_first_line(exc)})") from None
        end_run()
        fmt = container.format.name.split(",")[0]
        codec_name = codec.name
    if not n_decoded:
        raise DecodeError("no audio samples decoded")
    samples = converted[0] if len(converted) == 1 else np.concatenate(converted, axis=1)
    # Codecs with fixed frames (AAC, Opus, ...) decode the encoder's tail padding too; the ffmpeg command line
    # trims it to the stream's declared length, and so do we (only an overshoot shorter than two frames).
    declared_samples = int(round(declared * sample_rate))
    if 0 < declared_samples < samples.shape[1] <= declared_samples + 2 * largest_frame:
        samples = samples[:, :declared_samples]
    channels = samples.shape[0]
    return Probe(declared or samples.shape[1] / sample_rate, sample_rate, channels, codec_name, fmt), samples


# FFmpeg's default probe reads 5 MB. The WAV demuxer cuts PCM into 4,096-byte packets by default, so a long file
# arrives in thousands of frames, each with its Python overhead; 64 KiB packets avoid most of them. Demuxers
# without a max_size option ignore it.
_PCM_PACKET = {"max_size": "65536"}
_QUICK_PROBE = {"probesize": "32768", **_PCM_PACKET}


def _open_container(path: str):
    """Open with a small probe; where that finds no complete audio stream (a late stream in a transport
    stream, say), open again with FFmpeg's default probing."""
    import av

    try:
        container = av.open(path, options=_QUICK_PROBE)
        audio = next((s for s in container.streams if s.type == "audio"), None)
        if audio is not None and audio.codec_context.sample_rate and audio.codec_context.channels:
            return container
        container.close()
        return av.open(path, options=_PCM_PACKET)
    except av.FFmpegError as exc:
        raise DecodeError(f"not a media file FFmpeg can read ({_first_line(exc)})") from None


_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def frame_to_float(data: np.ndarray, sample_format: str, channels: int) -> np.ndarray:
    """Decoded samples as float32 ``(channels, n)``, scaled as FFmpeg's own s16/s32 -> float.

    ``data`` is PyAV's ``to_ndarray()`` of a frame, or of consecutive frames of one format concatenated along
    axis 1: ``(channels, n)`` for planar formats (``fltp``, ``s16p``, ...), ``(1, n * channels)`` interleaved for
    packed ones. Converting here costs one numpy pass, where a swresample call per frame cost more than the
    decoding of a short clip.
    """
    planar = sample_format.endswith("p")
    base = sample_format[:-1] if planar else sample_format
    if not planar:
        data = data.reshape(-1, channels).T
    if base in ("flt", "dbl"):
        return data.astype(np.float32, copy=False)
    if base == "u8":
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if base in ("s16", "s32"):
        # One pass: each integer cast to float32, then scaled by a power of two, which is exact.
        return np.multiply(data, np.float32(1.0 / _INT_SCALE[base]), dtype=np.float32, casting="unsafe")
    if base == "s64":
        return (data.astype(np.float64) / _INT_SCALE[base]).astype(np.float32)
    raise DecodeError(f"unsupported sample format {sample_format}")


def ffmpeg_executable() -> str:
    """The ``ffmpeg`` on PATH, else the static binary shipped by the ``imageio-ffmpeg`` wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DecodeError("decoder 'ffmpeg' needs an ffmpeg binary on PATH or the imageio-ffmpeg wheel") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_ffmpeg(path: str) -> tuple[Probe, np.ndarray]:
    """Decode with the ffmpeg command line (arguments passed as a list, never through a shell)."""
    import ffmpeg

    # The static binary has no ffprobe: the stream facts come from PyAV's header read, the samples from ffmpeg.
    facts = probe(path)
    try:
        out, _err = (
            ffmpeg.input(path)
            .output("pipe:", format="f32le", acodec="pcm_f32le", map="0:a:0")
            .run(cmd=ffmpeg_executable(), capture_stdout=True, capture_stderr=True, quiet=True)
        )
    except ffmpeg.Error as exc:
        lines = [line for line in exc.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise DecodeError(f"ffmpeg failed ({lines[-1] if lines else 'no message'})") from None
    flat = np.frombuffer(out, dtype="<f4")
    if flat.size == 0:
        raise DecodeError("no audio samples decoded")
    samples = flat[: flat.size - flat.size % facts.channels].reshape(-1, facts.channels).T
    return facts, np.ascontiguousarray(samples, dtype=np.float32)


def _declared_seconds(container, stream) -> float:
    """Duration the container declares for ``stream`` (seconds); 0 when it declares none."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def probe(path: str) -> Probe:
    """The first audio stream's facts, read from the container's header without decoding."""
    _check_readable(path)
    with _open_container(path) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise DecodeError("no audio stream")
        codec = stream.codec_context
        return Probe(_declared_seconds(container, stream), int(codec.sample_rate), int(codec.channels), codec.name,
                     container.format.name.split(",")[0])


DECODERS = {"pyav": decode_pyav, "ffmpeg": decode_ffmpeg}


def decode_source(path: str, *, decoder: str = "pyav") -> tuple[Probe, np.ndarray]:
    """Decode ``path``'s first audio stream and downmix it, at the source's own rate (the step before
    :func:`resample`; :func:`load_audio` does both).

    Returns
    -------
    probe : Probe
        Facts of the source's first audio stream (duration is the decoded one when the header has none).
    y : np.ndarray [shape=(n,)]
        Mono float32 samples at ``probe.sample_rate``.

    Raises
    ------
    DecodeError
        Empty, unreadable, not media, no audio stream, undecodable, truncated or non-finite input.
    """
    try:
        decode = DECODERS[decoder]
    except KeyError:
        raise ValueError(f"decoder={decoder!r} must be one of {sorted(DECODERS)}") from None
    facts, samples = decode(path)
    decoded_s = samples.shape[1] / facts.sample_rate
    # A header that promises much more audio than the stream holds means a cut-off file.
    if facts.duration_s > 1.0 and decoded_s < 0.9 * facts.duration_s - 0.5:
        raise DecodeError(f"truncated: decoded {decoded_s:.2f} s of the {facts.duration_s:.2f} s the header declares")
    y = downmix(samples)
    # Checked before resampling: soxr keeps finite samples finite (short of absurd magnitudes, which the
    # features and CLAP stages catch as non-finite results).
    if not np.isfinite(y).all():
        raise DecodeError("decoded samples contain NaN or infinity")
    return Probe(round(decoded_s, 6), facts.sample_rate, facts.channels, facts.codec, facts.container), y


def load_audio(path: str, *, target_sr: int = 48000, decoder: str = "pyav") -> tuple[Probe, np.ndarray]:
    """Decode ``path`` to mono float32 at ``target_sr``: :func:`decode_source`, then one :func:`resample`.

    Returns ``(probe, y [shape=(n,)])``; raises :class:`DecodeError` as :func:`decode_source` does.
    """
    probe, y = decode_source(path, decoder=decoder)
    return probe, resample(y, probe.sample_rate, target_sr)


# audio.wav_subtype -> soundfile's subtype. Integer PCM clips samples beyond [-1, 1).
WAV_SUBTYPES = {"float32": "FLOAT", "int16": "PCM_16", "int24": "PCM_24"}


def wav_bytes(y: np.ndarray, sr: int, subtype: str = "float32") -> bytes:
    """Mono WAV file contents, samples stored as ``subtype`` (a key of :data:`WAV_SUBTYPES`)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format="WAV", subtype=WAV_SUBTYPES[subtype])
    return buffer.getvalue()


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a WAV artifact: ``(y [shape=(n,)] float32, sample rate)``."""
    import soundfile as sf

    with open(path, "rb") as handle:  # a missing or unreadable artifact is an OSError (a fault), not sf's error
        y, sr = sf.read(handle, dtype="float32", always_2d=False)
    return y, sr
