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
import os
import shutil
import subprocess
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, Iterator

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


# Native-rate samples converted, downmixed and resampled at a time: memory follows this, not the file's duration.
CHUNK_SAMPLES = 1 << 18


@dataclass
class SourceStream:
    """An input's first audio stream while it is decoded: the header's facts and the decoded samples, native-rate
    float32 ``(channels, n)`` chunks of at most about :data:`CHUNK_SAMPLES`, read lazily."""

    facts: Probe
    chunks: Iterator[np.ndarray]
    channel_names: tuple[str, ...] = ()  # FFmpeg's names of the chunks' channels (``FL``, ``LFE``, ...)


def _layout_names(codec) -> tuple[str, ...]:
    """The channels' names in FFmpeg's layout of ``codec`` (a PyAV codec context); a layout FFmpeg does not
    know names none, and the channels count as front ones."""
    try:
        return tuple(channel.name for channel in codec.layout.channels)
    except (AttributeError, ValueError):
        return ()


def open_pyav(path: str) -> SourceStream:
    """Open the first audio stream in-process (PyAV); decoding happens as ``chunks`` is read."""
    _check_readable(path)
    container = _open_container(path)
    stream = next((s for s in container.streams if s.type == "audio"), None)
    if stream is None:
        container.close()
        raise DecodeError("no audio stream")
    codec = stream.codec_context
    declared = _declared_seconds(container, stream)
    facts = Probe(declared, int(codec.sample_rate or 0), int(codec.channels or 0), codec.name,
                  container.format.name.split(",")[0])
    return SourceStream(facts, _pyav_chunks(container, stream, int(round(declared * facts.sample_rate))),
                        _layout_names(codec))


def _pyav_chunks(container, stream, declared_samples: int) -> Iterator[np.ndarray]:
    """Decoded frames converted to float a run at a time (frames of one sample format and layout, up to
    :data:`CHUNK_SAMPLES`): one numpy pass instead of several per frame of about a thousand samples."""
    import av

    run: list[np.ndarray] = []
    run_key, run_channels, run_samples = None, 0, 0
    tail = _TailTrim(declared_samples)
    with container:
        try:
            for frame in container.decode(stream):
                key = (frame.format.name, frame.layout.name)
                if run and (key != run_key or run_samples >= CHUNK_SAMPLES):
                    yield from tail.feed(frame_to_float(np.concatenate(run, axis=1), run_key[0], run_channels))
                    run, run_samples = [], 0
                run_key, run_channels = key, len(frame.layout.channels)
                run.append(frame.to_ndarray())
                run_samples += frame.samples
                tail.largest_frame = max(tail.largest_frame, frame.samples)
        except av.FFmpegError as exc:
            decoded = tail.seen + run_samples
            if not decoded:
                raise DecodeError(f"undecodable audio ({_first_line(exc)})") from None
            raise DecodeError(f"truncated or corrupt audio after {decoded} samples ({_first_line(exc)})") from None
        if run:
            yield from tail.feed(frame_to_float(np.concatenate(run, axis=1), run_key[0], run_channels))
    yield from tail.finish()


class _TailTrim:
    """Codecs with fixed frames (AAC, Opus, ...) decode the encoder's tail padding too; the ffmpeg command line
    trims it to the stream's declared length, and so do we: an overshoot shorter than two frames is dropped.

    Samples beyond the declared length are held back until the overshoot outgrows two of the largest frames seen
    so far (then it is real audio under a wrong header, and passes)."""

    def __init__(self, declared_samples: int) -> None:
        self.declared, self.largest_frame, self.seen = declared_samples, 0, 0
        self.held: list[np.ndarray] = []

    def feed(self, chunk: np.ndarray) -> Iterator[np.ndarray]:
        self.seen += chunk.shape[1]
        if self.declared <= 0:
            yield chunk
            return
        room = max(0, self.declared - (self.seen - chunk.shape[1]))
        if room:
            yield chunk[:, :room]
        if chunk.shape[1] > room:
            self.held.append(chunk[:, room:])
            if self.seen - self.declared > 2 * self.largest_frame:
                yield from self.held
                self.held, self.declared = [], 0  # the header is wrong: no more trimming

    def finish(self) -> Iterator[np.ndarray]:
        if self.held and self.seen - self.declared > 2 * self.largest_frame:
            yield from self.held


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


def open_ffmpeg(path: str) -> SourceStream:
    """Decode with the ffmpeg command line (arguments passed as a list, never through a shell), read from its
    pipe a chunk at a time."""
    import ffmpeg

    # The static binary has no ffprobe: the stream facts come from PyAV's header read, the samples from ffmpeg.
    facts, names = _probe(path)
    args = (ffmpeg.input(path).output("pipe:", format="f32le", acodec="pcm_f32le", map="0:a:0")
            .global_args("-loglevel", "error").compile(cmd=ffmpeg_executable()))
    return SourceStream(facts, _ffmpeg_chunks(args, facts.channels), names)


def _ffmpeg_chunks(args: list[str], channels: int) -> Iterator[np.ndarray]:
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty ffmpeg never blocks on it
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
        try:
            frame_bytes = 4 * channels
            while data := process.stdout.read(CHUNK_SAMPLES * frame_bytes):
                while len(data) % frame_bytes and (more := process.stdout.read(frame_bytes - len(data) % frame_bytes)):
                    data += more
                flat = np.frombuffer(data[: len(data) - len(data) % frame_bytes], dtype="<f4")
                yield flat.reshape(-1, channels).T
        finally:
            process.stdout.close()
            returncode = process.wait()
        if returncode:
            errors.seek(0)
            lines = [line for line in errors.read().decode(errors="replace").splitlines() if line.strip()]
            raise DecodeError(f"ffmpeg failed ({lines[-1] if lines else 'no message'})")


def _declared_seconds(container, stream) -> float:
    """Duration the container declares for ``stream`` (seconds); 0 when it declares none. The container's own
    duration stands in only when ``stream`` is all it holds: it is its longest stream's (a second audio track's,
    a video's), and taken for the first track's it would call a complete file truncated."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / 1_000_000
    return 0.0


def probe(path: str) -> Probe:
    """The first audio stream's facts, read from the container's header without decoding."""
    return _probe(path)[0]


def _probe(path: str) -> tuple[Probe, tuple[str, ...]]:
    _check_readable(path)
    with _open_container(path) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise DecodeError("no audio stream")
        codec = stream.codec_context
        return Probe(_declared_seconds(container, stream), int(codec.sample_rate), int(codec.channels), codec.name,
                     container.format.name.split(",")[0]), _layout_names(codec)


OPENERS = {"pyav": open_pyav, "ffmpeg": open_ffmpeg}
Timer = Callable[[str], ContextManager]


def _untimed(_name: str) -> ContextManager:
    return nullcontext()


def open_source(path: str, *, decoder: str = "pyav") -> SourceStream:
    """Open ``path``'s first audio stream for decoding: the header's facts, and mono float32 chunks at the
    source's own rate (downmixed, checked; the step before :func:`resampled`).

    Raises
    ------
    DecodeError
        Empty, unreadable, not media, no audio stream; while ``chunks`` is read: undecodable, truncated or
        non-finite input.
    """
    source = open_channels(path, decoder=decoder)
    return SourceStream(source.facts, (downmix(chunk) for chunk in source.chunks), source.channel_names)


def open_channels(path: str, *, decoder: str = "pyav") -> SourceStream:
    """As :func:`open_source`, but every channel: float32 chunks [shape=(channels, n)] at the source's own rate,
    for what must see the channels before a downmix (a loudness meter)."""
    try:
        opener = OPENERS[decoder]
    except KeyError:
        raise ValueError(f"decoder={decoder!r} must be one of {sorted(OPENERS)}") from None
    source = opener(path)
    return SourceStream(source.facts, _checked(source.facts, source.chunks), source.channel_names)


def _checked(facts: Probe, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    decoded = 0
    for chunk in chunks:
        # Checked before resampling: soxr keeps finite samples finite (short of absurd magnitudes, which the
        # features and CLAP stages catch as non-finite results).
        if not np.isfinite(chunk).all():
            raise DecodeError("decoded samples contain NaN or infinity")
        decoded += chunk.shape[1]
        yield chunk
    if not decoded:
        raise DecodeError("no audio samples decoded")
    decoded_s = decoded / facts.sample_rate
    # A header that promises much more audio than the stream holds means a cut-off file.
    if facts.duration_s > 1.0 and decoded_s < 0.9 * facts.duration_s - 0.5:
        raise DecodeError(f"truncated: decoded {decoded_s:.2f} s of the {facts.duration_s:.2f} s the header declares")


def resampled(chunks: Iterable[np.ndarray], orig_sr: int, target_sr: int, *,
              timer: Timer = _untimed) -> Iterator[np.ndarray]:
    """Mono ``chunks`` resampled by one streaming soxr HQ resampler: the same samples, to the bit, as
    :func:`resample` of their concatenation (tested)."""
    if orig_sr == target_sr:
        yield from (chunk.astype(np.float32, copy=False) for chunk in chunks)
        return
    import soxr

    stream = soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality="HQ")
    for chunk in chunks:
        with timer("resample"):
            out = stream.resample_chunk(chunk)
        if out.size:
            yield out
    with timer("resample"):
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def decode_source(path: str, *, decoder: str = "pyav") -> tuple[Probe, np.ndarray]:
    """The whole of :func:`open_source`'s stream in memory: ``(probe, y [shape=(n,)])`` at the source's rate,
    the probe's duration being the decoded one. For short inputs and tests; the pipeline streams."""
    source = open_source(path, decoder=decoder)
    y = np.concatenate(list(source.chunks))
    return decoded_probe(source.facts, y.shape[0]), y


def decoded_probe(facts: Probe, decoded_samples: int) -> Probe:
    """The header's facts with the duration of the ``decoded_samples`` actually decoded (source rate)."""
    return Probe(round(decoded_samples / facts.sample_rate, 6), facts.sample_rate, facts.channels, facts.codec,
                 facts.container)


def load_audio(path: str, *, target_sr: int = 48000, decoder: str = "pyav") -> tuple[Probe, np.ndarray]:
    """Decode ``path`` to mono float32 at ``target_sr``: :func:`decode_source`, then one :func:`resample`.

    Returns ``(probe, y [shape=(n,)])``; raises :class:`DecodeError` as :func:`open_source` does.
    """
    probe, y = decode_source(path, decoder=decoder)
    return probe, resample(y, probe.sample_rate, target_sr)
