"""Speech activity (silero-vad, its TorchScript model from its wheel): how much of a file is speech, and where.

The decoded WAV is resampled to 16 kHz (soxr HQ, streamed) and fed to the model 512 samples at a time, as
silero-vad's own ``get_speech_timestamps`` feeds it; its ``get_speech_timestamps_from_probs`` turns the
probabilities into segments. Streaming is what differs: the audio is never whole in memory (a 10-hour file at
16 kHz would be 2.3 GB of float32), only one probability per 32 ms is kept. Equal to ``get_speech_timestamps``
on the same 16 kHz audio (tested).
"""
from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson

from ..config.settings import Section
from ..inputs.media import RESAMPLER, resampled
from ..inputs.wav import WavReader
from ..store.tables import DecodeRecord
from .base import Computed, Extractor

VAD_RATE = 16000
WINDOW = 512  # samples at 16 kHz: the model's one window size there
READ_SAMPLES = 1 << 18  # of the 48 kHz WAV at a time


@dataclass(frozen=True)
class SpeechSettings(Section):
    """Config section ``speech``: silero-vad's ``get_speech_timestamps`` defaults."""

    name = "speech"
    properties = {
        "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                      "description": "Speech probability at or above which a 32 ms window is speech."},
        "min_speech_ms": {"type": "integer", "minimum": 0, "description": "Shorter speech is dropped (ms)."},
        "min_silence_ms": {"type": "integer", "minimum": 0,
                           "description": "Silence that ends a segment, at least (ms)."},
        "speech_pad_ms": {"type": "integer", "minimum": 0, "description": "Padding added to each segment (ms)."},
    }
    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30


@dataclass(frozen=True)
class SpeechParams:
    """Everything that changes the segments: the settings, the 16 kHz resampler and the model's bytes."""

    threshold: float
    min_speech_ms: int
    min_silence_ms: int
    speech_pad_ms: int
    model_digest: str
    sample_rate: int = VAD_RATE
    resampler: str = RESAMPLER


def package_folder(name: str) -> Path:
    """An installed package's folder, found without importing it (silero-vad's ``__init__`` imports torch, and the
    workflow's own process learns the models' digests)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {name} package is not installed")
    return Path(spec.submodule_search_locations[0])


@lru_cache(maxsize=1)
def model_digest() -> str:
    """BLAKE2b-128 of the TorchScript model in silero-vad's wheel."""
    return hashlib.blake2b((package_folder("silero_vad") / "data" / "silero_vad.jit").read_bytes(),
                           digest_size=16).hexdigest()


def audio_16k(wav: WavReader) -> Iterator[np.ndarray]:
    """The WAV's samples resampled to 16 kHz, a span at a time [shape=(n,)] float32."""
    spans = (wav.read(start, min(wav.frames, start + READ_SAMPLES)) for start in range(0, wav.frames, READ_SAMPLES))
    return resampled(spans, wav.samplerate, VAD_RATE)


def speech_probabilities(chunks, model) -> tuple[list[float], int]:
    """The model's speech probability of each 512-sample window of ``chunks`` (16 kHz, the last window padded
    with zeros) and the samples seen, as ``get_speech_timestamps`` computes them."""
    import torch

    model.reset_states()
    with torch.no_grad():  # as silero's own call: with autograd on, the model's state chained every window (10 GB)
        return _windows(chunks, model)


def _windows(chunks, model) -> tuple[list[float], int]:
    import torch

    probabilities, samples, rest = [], 0, np.zeros(0, np.float32)
    for chunk in chunks:
        samples += chunk.shape[0]
        rest = np.concatenate([rest, chunk]) if rest.size else chunk
        whole = rest.shape[0] // WINDOW * WINDOW
        for start in range(0, whole, WINDOW):
            probabilities.append(model(torch.from_numpy(rest[start:start + WINDOW].copy()), VAD_RATE).item())
        rest = rest[whole:]
    if rest.size:
        window = np.zeros(WINDOW, np.float32)
        window[: rest.shape[0]] = rest
        probabilities.append(model(torch.from_numpy(window), VAD_RATE).item())
    return probabilities, samples


def speech_block(segments: list[dict], samples: int) -> dict:
    """The manifest's ``speech`` block from silero's segments (``{"start", "end"}`` in 16 kHz samples)."""
    pairs = [[s["start"] / VAD_RATE, s["end"] / VAD_RATE] for s in segments]
    speech = sum(end - start for start, end in pairs)
    duration = samples / VAD_RATE
    return {"speech_ratio": round(speech / duration, 6) if duration else 0.0, "speech_seconds": round(speech, 6),
            "segment_count": len(pairs), "segments": pairs,
            "first_speech_s": pairs[0][0] if pairs else None, "last_speech_s": pairs[-1][1] if pairs else None}


class SpeechExtractor(Extractor):
    name = "speech"
    version = "1"  # bump when the block changes for the same audio and parameters
    settings_sections = (SpeechSettings,)
    _seconds = {"type": ["number", "null"], "minimum": 0}
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["speech_ratio", "speech_seconds", "segment_count", "segments", "first_speech_s",
                     "last_speech_s"],
        "properties": {
            "speech_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "speech_seconds": {"type": "number", "minimum": 0}, "segment_count": {"type": "integer", "minimum": 0},
            "segments": {"type": "array", "items": {"type": "array", "items": {"type": "number"},
                                                    "minItems": 2, "maxItems": 2}},
            "first_speech_s": _seconds, "last_speech_s": _seconds,
        },
    }

    def __init__(self, params: SpeechParams, *, wav_params_hash: str | None) -> None:
        super().__init__(params, wav_params_hash=wav_params_hash)
        self._models = threading.local()  # the model keeps a stream's state: one per thread

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "SpeechExtractor":
        from .decode import DecodeExtractor

        section = settings.of(SpeechSettings)
        params = SpeechParams(float(section.threshold), int(section.min_speech_ms), int(section.min_silence_ms),
                              int(section.speech_pad_ms), model_digest())
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    def _model(self):
        if getattr(self._models, "model", None) is None:
            import torch
            from silero_vad import load_silero_vad

            torch.set_num_threads(1)  # a window is tiny: threads are the job's files, one each
            self._models.model = load_silero_vad()
        return self._models.model

    def compute_one(self, file: DecodeRecord) -> Computed:
        from silero_vad import get_speech_timestamps_from_probs

        with WavReader(file.wav) as wav:
            probabilities, samples = speech_probabilities(audio_16k(wav), self._model())
        p = self.params
        segments = get_speech_timestamps_from_probs(
            probabilities, sampling_rate=VAD_RATE, threshold=p.threshold, min_speech_duration_ms=p.min_speech_ms,
            min_silence_duration_ms=p.min_silence_ms, speech_pad_ms=p.speech_pad_ms, audio_length_samples=samples)
        return Computed(orjson.dumps(speech_block(segments, samples), option=orjson.OPT_SORT_KEYS), {})

    def column_types(self) -> dict:
        """Each number of the block as ``float64`` and ``speech_segments`` as ``list<list<float64>>``."""
        import pyarrow as pa

        return {**super().column_types(), "speech_segments": pa.list_(pa.list_(pa.float64()))}

    def columns(self, block: dict) -> dict:
        return {**super().columns(block), "speech_segments": block["segments"]}

    @classmethod
    def block_of(cls, row: dict) -> dict:
        return {**super().block_of(row), "segments": row["speech_segments"]}
