"""Speaker (resemblyzer's voice encoder, its weights from its wheel): a 256-d utterance embedding of a file's voice.

resemblyzer prepares a waveform whole (``preprocess_wav``: raised to -30 dBFS, its silences longer than about
0.3 s cut out by webrtcvad) and embeds it whole (``embed_utterance``: 40-band mel frames every 10 ms, partial
utterances of 160 frames every 77, each through its LSTM, their mean L2-normed). Here the 16 kHz audio is streamed
twice instead (soxr HQ from the decoded WAV): once for the gain, once through the same voice-activity windows, mel
frames and partials, each computed as soon as the samples it spans are in, so a 10-hour file holds seconds of
audio, not 2.3 GB. A file with no voiced 30 ms window has no embedding (resemblyzer would embed 1.6 s of
zeros). Equal to ``embed_utterance(preprocess_wav(audio))`` on the same 16 kHz audio (tested).
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import orjson

from ..config.settings import Section
from ..inputs.media import RESAMPLER
from ..inputs.wav import WavReader
from ..store.tables import DecodeRecord
from .base import Computed, Extractor
from .speech import VAD_RATE, audio_16k, package_folder

EMBEDDING_DIM = 256  # resemblyzer's model_embedding_size
VAD_WINDOW = 480  # resemblyzer's 30 ms webrtcvad window at 16 kHz
MEL_FFT, MEL_HOP, MEL_BANDS = 400, 160, 40  # its 25 ms window, 10 ms step, 40 bands
PARTIAL_FRAMES = 160  # mel frames per partial utterance (1.6 s)
TARGET_DBFS = -30.0  # its audio_norm_target_dBFS
INT16_MAX = 2 ** 15 - 1
PARTIALS_PER_PASS = 32


@dataclass(frozen=True)
class SpeakerSettings(Section):
    """Config section ``speaker``: ``embed_utterance``'s defaults."""

    name = "speaker"
    properties = {
        "partials_per_second": {"type": "number", "minimum": 0.625, "maximum": 100,
                                "description": "Partial utterances (1.6 s each) started per second of voice."},
        "min_coverage": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                         "description": "The last partial is kept when voice fills at least this share of it."},
    }
    partials_per_second: float = 1.3
    min_coverage: float = 0.75


@dataclass(frozen=True)
class SpeakerParams:
    partials_per_second: float
    min_coverage: float
    model_digest: str
    sample_rate: int = VAD_RATE
    resampler: str = RESAMPLER


@lru_cache(maxsize=1)
def model_digest() -> str:
    """BLAKE2b-128 of the voice encoder's weights in resemblyzer's wheel."""
    return hashlib.blake2b((package_folder("resemblyzer") / "pretrained.pt").read_bytes(),
                           digest_size=16).hexdigest()


def volume_gain(chunks) -> tuple[float, int]:
    """``normalize_volume(wav, -30, increase_only=True)``'s factor for the samples of ``chunks``, and their count."""
    energy, samples = 0.0, 0
    for chunk in chunks:
        energy += float(np.sum(np.square(chunk.astype(np.float64) * INT16_MAX)))
        samples += chunk.shape[0]
    rms = np.sqrt(energy / samples) if samples else 0.0
    if rms == 0:
        return 1.0, samples  # silence: no window is voiced, whatever the gain
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    return (1.0 if change < 0 else float(10 ** (change / 20))), samples


def kept_windows(flags: np.ndarray) -> np.ndarray:
    """Which 30 ms windows ``trim_long_silences`` keeps, from webrtcvad's flags: a moving average over 8 windows
    (3 before, 4 after) rounded, then dilated by 3 windows each way [shape=(len(flags),)] bool."""
    padded = np.concatenate([np.zeros(3), flags.astype(np.float64), np.zeros(4)])
    voiced = np.convolve(padded, np.ones(8), "valid") >= 5  # round(k / 8) is 1 from k = 5 (4 / 8 rounds to 0)
    return np.convolve(np.concatenate([np.zeros(3), voiced, np.zeros(3)]), np.ones(7), "valid") > 0


class VoicedStream:
    """The samples ``preprocess_wav`` keeps, from gained 16 kHz chunks: each 30 ms window's flag from one
    webrtcvad (aggressiveness 3), fed in order as resemblyzer feeds it; a window is released once the 7 windows
    after it have their flags. ``usable``: the samples before the last partial window, which it drops."""

    def __init__(self, usable: int) -> None:
        import webrtcvad

        self.vad, self.usable = webrtcvad.Vad(3), usable
        self.flags: list[bool] = []  # one per window: 1.2 MB for a 10-hour file
        self.windows: list[np.ndarray] = []  # windows not yet released
        self.held, self.seen = np.zeros(0, np.float32), 0

    def push(self, chunk: np.ndarray) -> list[np.ndarray]:
        chunk = chunk[: max(0, self.usable - self.seen)]
        self.seen += chunk.shape[0]
        self.held = np.concatenate([self.held, chunk])
        whole = self.held.shape[0] // VAD_WINDOW * VAD_WINDOW
        for start in range(0, whole, VAD_WINDOW):
            window = self.held[start:start + VAD_WINDOW]
            pcm = np.round(window * INT16_MAX).astype(np.int16).tobytes()
            self.flags.append(self.vad.is_speech(pcm, sample_rate=VAD_RATE))
            self.windows.append(window)
        self.held = self.held[whole:]
        return self._release(final=False)

    def _release(self, *, final: bool) -> list[np.ndarray]:
        """The held windows whose flags, and the 7 after them, are known (all of them at the end), if kept."""
        count = len(self.flags)
        first = count - len(self.windows)  # the first held window's index
        decided = count if final else count - 7
        if decided <= first:
            return []
        lo = max(0, first - 6)  # the flags a held window's decision reads start 6 windows before it
        keep = kept_windows(np.array(self.flags[lo:]))[first - lo:decided - lo]
        released = [window for window, kept in zip(self.windows[:decided - first], keep) if kept]
        del self.windows[:decided - first]
        return released

    def finish(self) -> list[np.ndarray]:
        return self._release(final=True)


def partial_step(partials_per_second: float) -> int:
    """Mel frames from one partial utterance's start to the next's (``compute_partial_slices``' frame step)."""
    return int(np.round((VAD_RATE / partials_per_second) / MEL_HOP))


def partial_starts(samples: int, partials_per_second: float, min_coverage: float) -> list[int]:
    """The first mel frame of each partial ``embed_utterance`` makes of ``samples`` voiced samples (resemblyzer's
    ``compute_partial_slices``)."""
    frames = int(np.ceil((samples + 1) / MEL_HOP))
    step = partial_step(partials_per_second)
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * MEL_HOP) / (PARTIAL_FRAMES * MEL_HOP)
    return starts[:-1] if coverage < min_coverage and len(starts) > 1 else starts


def mel_frames(samples: np.ndarray) -> np.ndarray:
    """resemblyzer's mel frames (power, not log) of ``samples``, whose first frame is centred ``MEL_FFT // 2``
    samples in, one frame per ``MEL_HOP`` [shape=(frames, 40)] float32."""
    import librosa

    return librosa.feature.melspectrogram(y=samples, sr=VAD_RATE, n_fft=MEL_FFT, hop_length=MEL_HOP,
                                          n_mels=MEL_BANDS, center=False).astype(np.float32).T


class Partials:
    """The voiced samples' mel frames and partial utterances, each made once the samples it spans are in; the
    partials go through the encoder ``PARTIALS_PER_PASS`` at a time and are summed."""

    def __init__(self, encoder, partials_per_second: float, min_coverage: float) -> None:
        self.encoder, self.partials_per_second, self.min_coverage = encoder, partials_per_second, min_coverage
        self.step = partial_step(partials_per_second)
        self.samples, self.sample_base, self.count = np.zeros(0, np.float32), 0, 0
        self.mels, self.mel_base = np.zeros((0, MEL_BANDS), np.float32), 0
        self.next_partial, self.pending, self.partials = 0, [], 0
        self.total = np.zeros(EMBEDDING_DIM, np.float64)

    def push(self, windows: list[np.ndarray]) -> None:
        if windows:
            self.samples = np.concatenate([self.samples, *windows])
            self.count += sum(w.shape[0] for w in windows)
            self._frames(until=(self.count - MEL_FFT // 2) // MEL_HOP + 1)  # frames of real samples only
            self._partials(lambda start: start + PARTIAL_FRAMES <= self.mel_base + len(self.mels))

    def finish(self) -> np.ndarray | None:
        """The L2-normed mean of the partials' embeddings [shape=(256,)] float32; None without a voiced sample."""
        if not self.count:
            return None
        starts = partial_starts(self.count, self.partials_per_second, self.min_coverage)
        self._frames(until=starts[-1] + PARTIAL_FRAMES)  # zeros past the end, as embed_utterance pads
        self._partials(lambda start: start <= starts[-1])
        self._embed()
        mean = self.total / self.partials
        return (mean / np.linalg.norm(mean)).astype(np.float32)

    def _frames(self, until: int) -> None:
        first = self.mel_base + len(self.mels)
        if until <= first:
            return
        lo = first * MEL_HOP - MEL_FFT // 2  # absolute sample index of the first frame's first sample
        hi = (until - 1) * MEL_HOP + MEL_FFT // 2
        span = np.zeros(hi - lo, np.float32)
        a, b = max(lo, self.sample_base), min(hi, self.sample_base + self.samples.shape[0])
        span[a - lo:b - lo] = self.samples[a - self.sample_base:b - self.sample_base]
        self.mels = np.concatenate([self.mels, mel_frames(span)])
        drop = max(0, until * MEL_HOP - MEL_FFT // 2 - self.sample_base)  # what the next frame no longer reads
        self.samples, self.sample_base = self.samples[drop:], self.sample_base + drop

    def _partials(self, ready) -> None:
        while ready(self.next_partial):
            start = self.next_partial - self.mel_base
            self.pending.append(self.mels[start:start + PARTIAL_FRAMES])
            self.next_partial += self.step
            if len(self.pending) == PARTIALS_PER_PASS:
                self._embed()
        drop = min(self.next_partial - self.mel_base, len(self.mels))
        self.mels, self.mel_base = self.mels[drop:], self.mel_base + drop

    def _embed(self) -> None:
        import torch

        if self.pending:
            with torch.no_grad():
                out = self.encoder(torch.from_numpy(np.stack(self.pending)).to(self.encoder.device)).cpu().numpy()
            self.total += out.astype(np.float64).sum(axis=0)
            self.partials += len(self.pending)
            self.pending = []


def speaker_embedding(wav: WavReader, encoder, params: SpeakerParams) -> tuple[np.ndarray | None, int, int]:
    """``(embedding or None, partials, voiced samples)`` of a decoded WAV, streamed twice at 16 kHz."""
    gain, samples = volume_gain(audio_16k(wav))
    voiced = VoicedStream(samples - samples % VAD_WINDOW)
    partials = Partials(encoder, params.partials_per_second, params.min_coverage)
    for chunk in audio_16k(wav):
        partials.push(voiced.push(chunk * gain if gain != 1.0 else chunk))
    partials.push(voiced.finish())
    embedding = partials.finish()
    return embedding, partials.partials, partials.count


class SpeakerExtractor(Extractor):
    name = "speaker"
    version = "1"  # bump when the block changes for the same audio and parameters
    settings_sections = (SpeakerSettings,)
    block_schema = {
        "type": "object", "additionalProperties": False, "required": ["embedding", "partials", "voiced_seconds"],
        "properties": {
            "embedding": {"type": ["array", "null"], "items": {"type": "number"},
                          "minItems": EMBEDDING_DIM, "maxItems": EMBEDDING_DIM},
            "partials": {"type": "integer", "minimum": 0}, "voiced_seconds": {"type": "number", "minimum": 0},
        },
    }
    matrix = ("speaker_embeddings.npy", "speaker_embedding", EMBEDDING_DIM)

    def __init__(self, params: SpeakerParams, *, wav_params_hash: str | None) -> None:
        super().__init__(params, wav_params_hash=wav_params_hash)
        self._lock = threading.Lock()
        self._encoder = None

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "SpeakerExtractor":
        from .decode import DecodeExtractor

        section = settings.of(SpeakerSettings)
        params = SpeakerParams(float(section.partials_per_second), float(section.min_coverage), model_digest())
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    def encoder(self):
        """resemblyzer's one ``VoiceEncoder`` of the job (an LSTM holds no state between calls)."""
        with self._lock:
            if self._encoder is None:
                import torch
                from resemblyzer import VoiceEncoder

                torch.set_num_threads(1)  # threads are the job's files, one each
                self._encoder = VoiceEncoder("cuda" if torch.cuda.is_available() else "cpu", verbose=False).eval()
            return self._encoder

    def compute_one(self, file: DecodeRecord) -> Computed:
        with WavReader(file.wav) as wav:
            embedding, partials, voiced = speaker_embedding(wav, self.encoder(), self.params)
        block = {"embedding": None if embedding is None else [float(x) for x in embedding], "partials": partials,
                 "voiced_seconds": round(voiced / VAD_RATE, 6)}
        return Computed(orjson.dumps(block, option=orjson.OPT_SORT_KEYS), {})

    def column_types(self) -> dict:
        """``speaker_embedding`` (256 float32 values, as ``speaker_embeddings.npy``'s row), ``speaker_partials``
        and ``speaker_voiced_seconds``."""
        import pyarrow as pa

        return {**super().column_types(), "speaker_embedding": pa.list_(pa.float32())}

    def columns(self, block: dict) -> dict:
        return {**super().columns(block), "speaker_embedding": block["embedding"]}

    @classmethod
    def block_of(cls, row: dict) -> dict:
        return {**super().block_of(row), "embedding": row["speaker_embedding"]}
