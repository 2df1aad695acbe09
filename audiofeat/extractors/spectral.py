"""Spectral descriptors of a decoded WAV, from :mod:`audiofeat.dsp.descriptors` (librosa's values, faster):
centroid, bandwidth, rolloff, flatness, RMS, zero-crossing rate, contrast and chroma, summarised like
``features``, and the onset rate and tempo."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import orjson

from ..config.schema import ConfigError
from ..config.settings import Section
from ..faults import Verdict
from ..inputs.wav import WavReader
from ..store.tables import DecodeRecord
from .base import Computed, Extractor


@dataclass(frozen=True)
class SpectralSettings(Section):
    """Config section ``spectral``: librosa's defaults."""

    name = "spectral"
    properties = {
        "n_fft": {"type": "integer", "minimum": 16, "description": "FFT size of the STFT, in samples."},
        "hop_length": {"type": "integer", "minimum": 1, "description": "Hop between frames, in samples."},
        "roll_percent": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                         "description": "Share of a frame's magnitude below its rolloff frequency."},
        "tuning": {"type": "number", "minimum": -0.5, "maximum": 0.5,
                   "description": "Chroma's deviation from A440, in fractions of a chroma bin."},
    }
    n_fft: int = 2048
    hop_length: int = 512
    roll_percent: float = 0.85
    tuning: float = 0.0


@dataclass(frozen=True)
class SpectralParams:
    """Keyword arguments of :func:`audiofeat.dsp.descriptors.spectral_summary`: everything that changes it."""

    sr: int
    n_fft: int
    hop_length: int
    roll_percent: float
    tuning: float
    contrast_fmin: float = 200.0
    contrast_n_bands: int = 6
    contrast_quantile: float = 0.02
    n_chroma: int = 12
    n_mels: int = 128
    top_db: float = 80.0
    ac_size: float = 8.0
    start_bpm: float = 120.0


_ONE = {"type": "object", "required": ["mean", "median"], "additionalProperties": {"type": "number"}}
_MANY = {"type": "object", "required": ["mean", "median"],
         "additionalProperties": {"type": "array", "items": {"type": "number"}, "minItems": 1}}


def _rows() -> tuple:
    from ..dsp.descriptors import SHAPE_ROWS

    return SHAPE_ROWS


class SpectralExtractor(Extractor):
    name = "spectral"
    version = "1"  # bump when a value changes for the same audio and parameters
    settings_sections = (SpectralSettings,)
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["params", "n_frames", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "rms", "zcr",
                     "contrast_db", "chroma", "onsets", "onset_rate_hz", "tempo_bpm"],
        "properties": {
            "params": {"type": "object"}, "n_frames": {"type": "integer", "minimum": 1},
            **{row: _ONE for row in ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "rms", "zcr")},
            "contrast_db": _MANY, "chroma": _MANY, "onsets": {"type": "integer", "minimum": 0},
            "onset_rate_hz": {"type": "number", "minimum": 0}, "tempo_bpm": {"type": ["number", "null"]},
        },
    }

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "SpectralExtractor":
        from .decode import DecodeExtractor

        section = settings.of(SpectralSettings)
        params = SpectralParams(sr=int(settings.audio.target_sr), n_fft=int(section.n_fft),
                                hop_length=int(section.hop_length), roll_percent=float(section.roll_percent),
                                tuning=float(section.tuning))
        from ..dsp.descriptors import contrast_bands
        from ..dsp.spectrum import ParameterError

        try:  # the bands' own check, as a config error naming the setting
            contrast_bands(sr=params.sr, n_fft=params.n_fft, fmin=params.contrast_fmin, n_bands=params.contrast_n_bands)
        except ParameterError as error:
            raise ConfigError(f"{error}: set audio.target_sr above twice that") from None
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    def compute_one(self, file: DecodeRecord) -> Computed:
        """The manifest's ``spectral`` block, stored as its JSON (finalize inserts it byte for byte)."""
        from ..dsp.descriptors import spectral_summary

        with WavReader(file.wav) as wav:  # read a span at a time: memory follows the frames, not the duration
            summary = spectral_summary(wav, **asdict(self.params))
        block = {"params": asdict(self.params), **summary}
        if not all(np.isfinite(v).all() for row in (*_rows(), "contrast_db", "chroma") for v in block[row].values()):
            raise Verdict("ValueError: non-finite spectral statistics")
        return Computed(orjson.dumps(block, option=orjson.OPT_SORT_KEYS), {})

    def column_types(self) -> dict:
        """``spectral_n_frames``, ``spectral_params`` (JSON), ``spectral_onsets``, ``spectral_onset_rate_hz``,
        ``spectral_tempo_bpm``, each one-row descriptor's statistics as ``float64``
        (``spectral_centroid_hz_mean``) and contrast's and chroma's as ``list<float64>`` (7 and 12 values)."""
        import pyarrow as pa

        from ..dsp import STAT_NAMES

        columns = {"spectral_n_frames": pa.int64(), "spectral_params": pa.string(), "spectral_onsets": pa.int64(),
                   "spectral_onset_rate_hz": pa.float64(), "spectral_tempo_bpm": pa.float64()}
        for row in _rows():
            columns.update({f"spectral_{row}_{stat}": pa.float64() for stat in STAT_NAMES})
        for row in ("contrast_db", "chroma"):
            columns.update({f"spectral_{row}_{stat}": pa.list_(pa.float64()) for stat in STAT_NAMES})
        return columns

    def columns(self, block: dict) -> dict:
        from ..dsp import STAT_NAMES

        values = {"spectral_params": json.dumps(block["params"], sort_keys=True),
                  **{f"spectral_{key}": block[key] for key in ("n_frames", "onsets", "onset_rate_hz", "tempo_bpm")}}
        for row in (*_rows(), "contrast_db", "chroma"):
            values.update({f"spectral_{row}_{stat}": block[row][stat] for stat in STAT_NAMES})
        return values

    @classmethod
    def block_of(cls, row: dict) -> dict:
        from ..dsp import STAT_NAMES

        block = {"params": json.loads(row["spectral_params"]),
                 **{key: row[f"spectral_{key}"] for key in ("n_frames", "onsets", "onset_rate_hz", "tempo_bpm")}}
        for name in (*_rows(), "contrast_db", "chroma"):
            block[name] = {stat: row[f"spectral_{name}_{stat}"] for stat in STAT_NAMES}
        return block
