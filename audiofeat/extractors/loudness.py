"""Signal quality and loudness per file, for cleaning datasets: integrated loudness (ITU-R BS.1770-4, through
pyloudnorm), sample and true peak, clipping, near-silence, DC offset and the effective bandwidth (which gives
away audio upsampled from a lower rate)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import orjson

from ..inputs.wav import read_wav
from ..store.tables import DecodeRecord
from .base import Computed, Extractor


@dataclass(frozen=True)
class LoudnessParams:
    """Fixed definitions (no config section): a change is a new ``version``."""

    sample_rate: int
    clip_level: float = 0.9999  # |sample| at or above it counts as clipped (int16 full scale is 0.99997)
    silence_dbfs: float = -60.0  # a 20 ms frame whose RMS is below it is near-silent
    frame_s: float = 0.02
    true_peak_oversampling: int = 4  # BS.1770-4 Annex 2
    bandwidth_floor_db: float = -60.0  # below the spectrum's peak band, relative
    bandwidth_nfft: int = 4096


def _dbfs(value: float) -> float | None:
    return round(20 * math.log10(value), 4) if value > 0 else None


def integrated_loudness(y: np.ndarray, sample_rate: int) -> float | None:
    """BS.1770-4 integrated loudness of mono ``y`` in LUFS; None when every block is gated out (silence or
    shorter than one 400 ms block)."""
    import pyloudnorm

    if y.shape[0] < int(0.4 * sample_rate):
        return None
    value = pyloudnorm.Meter(sample_rate).integrated_loudness(y.astype(np.float64))
    return round(float(value), 4) if math.isfinite(value) else None


def true_peak(y: np.ndarray, oversampling: int) -> float:
    """Peak of ``|y|`` after ``oversampling``-times polyphase upsampling (inter-sample peaks included)."""
    from scipy.signal import resample_poly

    return float(np.max(np.abs(resample_poly(y, oversampling, 1)))) if y.size else 0.0


def silent_frame_ratio(y: np.ndarray, frame: int, silence_dbfs: float) -> float:
    """Share of ``frame``-sample frames (the tail included) whose RMS is below ``silence_dbfs``."""
    n_frames = max(1, -(-y.shape[0] // frame))
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[: y.shape[0]] = y
    lengths = np.full(n_frames, frame)
    lengths[-1] = y.shape[0] - (n_frames - 1) * frame or frame
    rms = np.sqrt((padded.reshape(n_frames, frame) ** 2).sum(axis=1) / lengths)
    return float(np.mean(rms < 10 ** (silence_dbfs / 20)))


def effective_bandwidth(y: np.ndarray, sample_rate: int, *, nfft: int, floor_db: float) -> float:
    """Highest frequency (Hz) whose long-term power (Welch, ``nfft``) is within ``floor_db`` of the loudest
    band; 0 for silence. Blackman-Harris: its sidelobes (-92 dB) stay under the floor, Hann's do not."""
    from scipy.signal import welch

    if not np.any(y):
        return 0.0
    freqs, power = welch(y.astype(np.float64), fs=sample_rate, window="blackmanharris",
                         nperseg=min(nfft, y.shape[0]))
    above = np.nonzero(power >= power.max() * 10 ** (floor_db / 10))[0]
    return float(freqs[above[-1]])


def loudness_block(y: np.ndarray, params: LoudnessParams) -> dict:
    """The manifest's ``loudness`` block for mono ``y`` [shape=(n,)] at ``params.sample_rate``."""
    sr = params.sample_rate
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return {
        "integrated_lufs": integrated_loudness(y, sr),
        "sample_peak_dbfs": _dbfs(peak),
        "true_peak_dbfs": _dbfs(true_peak(y, params.true_peak_oversampling)),
        "clipping_ratio": round(float(np.mean(np.abs(y) >= params.clip_level)), 8) if y.size else 0.0,
        "silent_frame_ratio": round(silent_frame_ratio(y, max(1, round(params.frame_s * sr)), params.silence_dbfs), 6),
        "dc_offset": round(float(np.mean(y, dtype=np.float64)), 8) if y.size else 0.0,
        "effective_bandwidth_hz": round(effective_bandwidth(y, sr, nfft=params.bandwidth_nfft,
                                                            floor_db=params.bandwidth_floor_db), 2),
    }


class LoudnessExtractor(Extractor):
    name = "loudness"
    version = "1"  # bump when a value changes for the same audio
    _nullable = {"type": ["number", "null"]}
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["integrated_lufs", "sample_peak_dbfs", "true_peak_dbfs", "clipping_ratio",
                     "silent_frame_ratio", "dc_offset", "effective_bandwidth_hz"],
        "properties": {
            "integrated_lufs": _nullable, "sample_peak_dbfs": _nullable, "true_peak_dbfs": _nullable,
            "clipping_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "silent_frame_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "dc_offset": {"type": "number"}, "effective_bandwidth_hz": {"type": "number", "minimum": 0},
        },
    }

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "LoudnessExtractor":
        from .decode import DecodeExtractor

        return cls(LoudnessParams(int(settings.audio.target_sr)),
                   wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    def compute_one(self, file: DecodeRecord) -> Computed:
        y, _ = read_wav(file.wav)
        return Computed(orjson.dumps(loudness_block(y, self.params), option=orjson.OPT_SORT_KEYS), {})
