"""Decoding as an extractor: an input's bytes to a mono float32 WAV at ``audio.target_sr``, or a verdict.

Unlike the others it reads the input itself (an inventory row), not a decoded WAV; its artifact's identity is
part of every other extractor's key.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from ..decode import DECODE_VERSION, RESAMPLER, DecodeError, InputUnreadable, decode_source, resample, wav_bytes
from ..faults import InputChanged, is_fault, one_line
from ..inventory import input_signature
from ..manifest import path_text
from ..profiling import JobProfile
from ..store import ArtifactKey, ArtifactStore
from ..tables import IngestRecord
from .base import Extractor


@dataclass(frozen=True)
class DecodeParams:
    target_sr: int
    mono: str = "mean"
    resampler: str = RESAMPLER
    dtype: str = "float32"  # how the WAV stores samples (audio.wav_subtype); read back as float32 always


class DecodeExtractor(Extractor):
    name = "decode"
    version = DECODE_VERSION
    artifact_kind = "wav"
    suffix = ".wav"

    def __init__(self, params: DecodeParams, *, decoder: str = "pyav") -> None:
        super().__init__(params, wav_params_hash=None)
        self.decoder = decoder  # pyav or the ffmpeg command line: the same samples within tolerance, not in the key

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "DecodeExtractor":
        return cls(DecodeParams(int(settings.audio.target_sr), dtype=settings.audio.wav_subtype),
                   decoder=settings.audio.decoder)

    def verdict_key(self, content_key: str) -> ArtifactKey:
        """Where the decoder's verdict on bytes that give no WAV is kept, beside the WAV they would have given."""
        return dataclasses.replace(self.key(content_key), extractor="decode_verdict", suffix=".txt")

    def ingest(self, row: dict, store: ArtifactStore, profile: JobProfile) -> tuple[IngestRecord, bool]:
        """``(record, cache hit)`` for one inventory row: its WAV from the store, or decoded and stored; a
        verdict (stored, and reused) when its bytes give none.

        Only bytes whose stat is the one the inventory hashed are decoded, checked before and after decoding: a
        file that changed since is a fault (:class:`InputChanged`), so nothing is stored under a key its bytes do
        not have. Faults propagate.
        """
        key, verdict_key = self.key(row["content_key"]), self.verdict_key(row["content_key"])
        base = IngestRecord(row["content_key"], path_text(row["path"]), "error")
        started = time.perf_counter()
        check_unchanged(row)
        found = store.get(key)
        if found is None and (known := store.get(verdict_key)):
            return _failed(base, known.meta["error"], known.path), True
        if found is None:
            try:
                with profile.timer("decode"):
                    probe, y = decode_source(row["path"], decoder=self.decoder)
                with profile.timer("resample"):
                    y = resample(y, probe.sample_rate, self.params.target_sr)
            except InputUnreadable as exc:
                return _failed(base, str(exc)), False
            except DecodeError as exc:
                check_unchanged(row)  # a verdict on bytes the key does not name would poison the store
                return _failed(base, str(exc), store.put(verdict_key, b"", {"error": str(exc)}).path), False
            except Exception as exc:  # noqa: BLE001 - classified: a fault stops the job, anything else is this file's
                if is_fault(exc):
                    raise
                return _failed(base, one_line(exc)), False
            check_unchanged(row)
            meta = {"probe": probe.__dict__, "samples": int(y.shape[0]),
                    "seconds": round(time.perf_counter() - started, 6)}
            with profile.timer("write"):
                stored = store.put(key, wav_bytes(y, self.params.target_sr, self.params.dtype), meta)
        else:
            stored = found
        return IngestRecord(row["content_key"], base.path, "ok", samples=stored.meta["samples"],
                            audio={**stored.meta["probe"], "target_sr": self.params.target_sr, "wav": str(stored.path)},
                            seconds=stored.meta.get("seconds", 0.0), cache_hit=found is not None,
                            extractor=self.identity()), found is not None


def _failed(base: IngestRecord, message: str, artifact=None) -> IngestRecord:
    return dataclasses.replace(base, error=f"decode: {message}", artifact=str(artifact) if artifact else None)


def check_unchanged(row: dict) -> None:
    """Raise :class:`InputChanged` unless the input's stat is the one its content key was hashed under."""
    try:
        now = input_signature(os.stat(row["path"]))
    except OSError:
        raise InputChanged(row["path"]) from None
    if row.get("stat") and now != row["stat"]:
        raise InputChanged(row["path"])
