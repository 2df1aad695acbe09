"""Log-mel and MFCC statistics of a decoded WAV, from :mod:`audiofeat.dsp` (librosa's values, faster)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import orjson

from ..config.settings import Section
from ..faults import Verdict
from ..inputs.wav import WavReader
from ..store.tables import DecodeRecord
from .base import Computed, Extractor


@dataclass(frozen=True)
class FeaturesSettings(Section):
    """Config section ``features``: librosa's ``mfcc`` defaults."""

    name = "features"
    properties = {
        "n_fft": {"type": "integer", "minimum": 16, "description": "FFT size of the STFT, in samples."},
        "hop_length": {"type": "integer", "minimum": 1, "description": "Hop between frames, in samples."},
        "n_mels": {"type": "integer", "minimum": 1, "description": "Number of mel bands."},
        "n_mfcc": {"type": "integer", "minimum": 1, "description": "Number of MFCC coefficients."},
        "fmin": {"type": "number", "minimum": 0, "description": "Lowest mel band edge, in Hz."},
        "fmax": {"type": ["number", "null"], "description": "Highest mel band edge, in Hz; null means target_sr / 2."},
        "top_db": {"type": ["number", "null"],
                   "description": "Dynamic range floor of the log-mel below its maximum, in dB; null disables it."},
    }
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0


@dataclass(frozen=True)
class FeaturesParams:
    """Keyword arguments of :func:`audiofeat.dsp.feature_summary`: everything that changes the statistics."""

    sr: int
    n_fft: int
    hop_length: int
    n_mels: int
    n_mfcc: int
    fmin: float
    fmax: float | None
    top_db: float | None
    window: str = "hann"
    htk: bool = False
    norm: str = "slaney"
    center: bool = True
    pad_mode: str = "constant"


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


_STATS_SCHEMA = {"type": "object", "required": ["mean", "std", "min", "max", "median"],
                 "additionalProperties": {"type": "array", "items": {"type": "number"}, "minItems": 1}}


class FeaturesExtractor(Extractor):
    name = "features"
    version = "1"  # bump when the statistics change for the same audio and parameters
    settings_sections = (FeaturesSettings,)
    block_schema = {
        "type": "object", "required": ["params", "mfcc", "mel", "n_frames"], "additionalProperties": False,
        "properties": {"params": {"type": "object"}, "n_frames": {"type": "integer", "minimum": 1},
                       "mfcc": _STATS_SCHEMA, "mel": _STATS_SCHEMA},
    }

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "FeaturesExtractor":
        from .decode import DecodeExtractor

        section = settings.of(FeaturesSettings)
        params = FeaturesParams(
            sr=int(settings.audio.target_sr), n_fft=int(section.n_fft), hop_length=int(section.hop_length),
            n_mels=int(section.n_mels), n_mfcc=int(section.n_mfcc), fmin=float(section.fmin),
            fmax=_optional_float(section.fmax), top_db=_optional_float(section.top_db))
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    def compute_one(self, file: DecodeRecord) -> Computed:
        """The manifest's ``features`` block, stored as its JSON (finalize inserts it byte for byte)."""
        with WavReader(file.wav) as wav:  # read a span at a time: memory follows the frames, not the duration
            block = features_block(wav, self.params)
        if not all(np.isfinite(v).all() for part in ("mel", "mfcc") for v in block[part].values()):
            raise Verdict("ValueError: non-finite statistics")
        return Computed(orjson.dumps(block, option=orjson.OPT_SORT_KEYS), {})


    def column_types(self) -> dict:
        """``features_n_frames``, ``features_params`` (JSON) and each statistic as ``list<float64>``
        (``features_mel_mean``: ``n_mels`` values; ``features_mfcc_median``: ``n_mfcc``; also
        ``features_mfcc_delta_mean``/``_std``)."""
        import pyarrow as pa

        columns = {"features_n_frames": pa.int64(), "features_params": pa.string()}
        for part, names in _statistics():
            columns.update({f"features_{part}_{name}": pa.list_(pa.float64()) for name in names})
        return columns

    def columns(self, block: dict) -> dict:
        values = {"features_n_frames": block["n_frames"],
                  "features_params": json.dumps(block["params"], sort_keys=True)}
        for part, names in _statistics():
            values.update({f"features_{part}_{name}": block[part][name] for name in names})
        return values

    @classmethod
    def block_of(cls, row: dict) -> dict:
        return {"params": json.loads(row["features_params"]), "n_frames": row["features_n_frames"],
                **{part: {name: row[f"features_{part}_{name}"] for name in names} for part, names in _statistics()}}


def _statistics() -> tuple:
    """``(part, statistic names)`` of a features block, as the dataset's columns name them."""
    from ..dsp import STAT_NAMES

    return ("mel", STAT_NAMES), ("mfcc", (*STAT_NAMES, "delta_mean", "delta_std"))


def features_block(y, params: FeaturesParams) -> dict:
    """The ``features`` block for mono ``y`` [shape=(n,)] at ``params.sr``, or for a :class:`WavReader`'s."""
    from ..dsp import feature_summary

    kwargs = asdict(params)
    summary = feature_summary(y, **kwargs)
    return {"params": kwargs, "mfcc": summary["mfcc"], "mel": summary["mel"], "n_frames": summary["n_frames"]}
