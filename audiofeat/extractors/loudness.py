"""Signal quality and loudness per file, as a meter measures them, for cleaning datasets: integrated loudness
and loudness range (ITU-R BS.1770-4, EBU R128), sample and true peak and clipping of the worst channel (and
which), near-silence, DC offset and the effective bandwidth (which gives away audio upsampled from a lower
rate).

Measured on the input file itself, every channel at its own rate (:mod:`audiofeat.dsp.bs1770`), not on the
decoded mono WAV: BS.1770 sums the channels' energies where a downmix averages their samples (a stereo file
reads up to several LU lower as a downmix, and a channel that clips alone is averaged away). So the job decodes
the input again, streamed, and its artifact does not depend on the WAV's settings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import orjson

from ..dsp.bs1770 import LoudnessMeter, MeterReading
from ..inputs.media import DECODE_VERSION, open_channels
from ..store.tables import DecodeRecord
from .base import Computed, Extractor
from .decode import check_unchanged


@dataclass(frozen=True)
class LoudnessParams:
    """Fixed definitions (no config section): a change is a new ``version``."""

    clip_level: float = 0.9999  # |sample| at or above it counts as clipped (int16 full scale is 0.99997)
    silence_dbfs: float = -60.0  # a 20 ms frame whose mean power over the channels is below it is near-silent
    frame_s: float = 0.02
    true_peak_oversampling: int = 4  # BS.1770-4 Annex 2
    bandwidth_floor_db: float = -60.0  # below the spectrum's peak band, relative
    bandwidth_nfft: int = 4096
    decoded_by: str = DECODE_VERSION  # the samples are the decoder's: a new decoder measures again


def _dbfs(value: float) -> float | None:
    return round(20 * math.log10(value), 4) if value > 0 else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def measure(chunks, sample_rate: int, names: list[str], params: LoudnessParams) -> MeterReading:
    """Meter ``chunks`` (float ``(channels, n)`` arrays at ``sample_rate``; ``names``: FFmpeg's channel names)."""
    meter = LoudnessMeter(sample_rate, names, clip_level=params.clip_level, silence_dbfs=params.silence_dbfs,
                          frame_s=params.frame_s, true_peak_oversampling=params.true_peak_oversampling,
                          nfft=params.bandwidth_nfft)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.finish()


def loudness_block(reading: MeterReading, sample_rate: int, params: LoudnessParams) -> dict:
    """The manifest's ``loudness`` block from a file's :class:`MeterReading`: loudness over the channels, the
    worst channel's peaks and clipping (channel indices in the file's order), the rest over all channels."""
    samples = max(1, reading.samples)
    clipping = reading.clipped_samples / samples
    dc = reading.sum / samples
    loudest = int(np.argmax(reading.true_peak))
    return {
        "integrated_lufs": _rounded(reading.integrated_lufs),
        "loudness_range_lu": _rounded(reading.loudness_range_lu),
        "sample_peak_dbfs": _dbfs(float(reading.sample_peak.max())),
        "true_peak_dbfs": _dbfs(float(reading.true_peak[loudest])),
        "peak_channel": loudest if reading.true_peak.any() else None,
        "clipping_ratio": round(float(clipping.max()), 8),
        "clipping_channel": int(np.argmax(clipping)) if clipping.any() else None,
        "silent_frame_ratio": round(reading.silent_frames / max(1, reading.frames), 6),
        "dc_offset": round(float(dc[np.argmax(np.abs(dc))]), 8),
        "effective_bandwidth_hz": round(reading.bandwidth_hz(sample_rate, params.bandwidth_floor_db), 2),
        "channels": int(reading.sample_peak.shape[0]),
        "sample_rate": sample_rate,
    }


class LoudnessExtractor(Extractor):
    name = "loudness"
    version = "2"  # bump when a value changes for the same audio
    reads_source = True
    _nullable = {"type": ["number", "null"]}
    _channel = {"type": ["integer", "null"], "minimum": 0}
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["integrated_lufs", "loudness_range_lu", "sample_peak_dbfs", "true_peak_dbfs", "peak_channel",
                     "clipping_ratio", "clipping_channel", "silent_frame_ratio", "dc_offset",
                     "effective_bandwidth_hz", "channels", "sample_rate"],
        "properties": {
            "integrated_lufs": _nullable, "loudness_range_lu": _nullable, "sample_peak_dbfs": _nullable,
            "true_peak_dbfs": _nullable, "peak_channel": _channel, "clipping_channel": _channel,
            "clipping_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "silent_frame_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "dc_offset": {"type": "number"}, "effective_bandwidth_hz": {"type": "number", "minimum": 0},
            "channels": {"type": "integer", "minimum": 1}, "sample_rate": {"type": "integer", "minimum": 1},
        },
    }

    def __init__(self, params: LoudnessParams, *, decoder: str = "pyav") -> None:
        super().__init__(params, wav_params_hash=None)
        self.decoder = decoder  # as the decode stage's: not in the key

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "LoudnessExtractor":
        return cls(LoudnessParams(), decoder=settings.audio.decoder)

    def compute_one(self, file: DecodeRecord) -> Computed:
        row = self.source_row(file)
        check_unchanged(row)  # only the bytes the content key names are measured
        source = open_channels(row["path"], decoder=self.decoder)
        names = list(source.channel_names)
        if len(names) != source.facts.channels:
            names = ["FC"] * source.facts.channels  # a layout FFmpeg cannot name: every channel a front one
        reading = measure(source.chunks, source.facts.sample_rate, names, self.params)
        check_unchanged(row)
        block = loudness_block(reading, source.facts.sample_rate, self.params)
        return Computed(orjson.dumps(block, option=orjson.OPT_SORT_KEYS), {})
