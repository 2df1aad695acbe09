"""Decoding as an extractor: an input's bytes to a mono float32 WAV at ``audio.target_sr``, or a verdict.

Unlike the others it reads the input itself (an inventory row), not a decoded WAV; its artifact's identity is
part of every other extractor's key.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from ..faults import InputChanged, is_fault, one_line
from ..inputs.inventory import input_signature, path_text
from ..inputs.media import (
    DECODE_VERSION,
    RESAMPLER,
    DecodeError,
    InputUnreadable,
    decoded_probe,
    open_source,
    resampled,
)
from ..inputs.wav import write_wav
from ..store.artifacts import ArtifactKey, ArtifactStore, StoredArtifact
from ..store.tables import DecodeRecord
from .base import Extractor
from .profiling import JobProfile


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

    def __init__(self, params: DecodeParams, *, decoder: str = "pyav", max_hours: float = 0.0) -> None:
        super().__init__(params, wav_params_hash=None)
        self.decoder = decoder  # pyav or the ffmpeg command line: the same samples within tolerance, not in the key
        self.max_hours = max_hours  # audio.max_hours: a longer input is its verdict (not stored: not in the key)

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "DecodeExtractor":
        return cls(DecodeParams(int(settings.audio.target_sr), dtype=settings.audio.wav_subtype),
                   decoder=settings.audio.decoder, max_hours=settings.audio.max_hours)

    def verdict_key(self, content_key: str) -> ArtifactKey:
        """Where the decoder's verdict on bytes that give no WAV is kept, beside the WAV they would have given."""
        return dataclasses.replace(self.key(content_key), extractor="decode_verdict", suffix=".txt")

    def decode(self, row: dict, store: ArtifactStore, profile: JobProfile) -> tuple[DecodeRecord, bool]:
        """``(record, cache hit)`` for one inventory row: its WAV from the store, or decoded and stored; a
        verdict (stored, and reused) when its bytes give none.

        Only bytes whose stat is the one the inventory hashed are decoded, checked before and after decoding: a
        file that changed since is a fault (:class:`InputChanged`), so nothing is stored under a key its bytes do
        not have. Faults propagate.
        """
        key, verdict_key = self.key(row["content_key"]), self.verdict_key(row["content_key"])
        base = DecodeRecord(row["content_key"], path_text(row["path"]), "error")
        started = time.perf_counter()
        check_unchanged(row)
        found = store.get(key)
        if found is None and (known := store.get(verdict_key)):
            return _failed(base, known.meta["error"], known.path), True
        if found is None:
            try:
                stored = self._decode_into(store, key, row, profile, started)
            except (InputUnreadable, TooLong) as exc:
                return _failed(base, str(exc)), False
            except DecodeError as exc:
                check_unchanged(row)  # a verdict on bytes the key does not name would poison the store
                return _failed(base, str(exc), store.put(verdict_key, b"", {"error": str(exc)}).path), False
            except Exception as exc:  # noqa: BLE001 - classified: a fault stops the job, anything else is this file's
                if is_fault(exc):
                    raise
                return _failed(base, one_line(exc)), False
        else:
            stored = found
        return DecodeRecord(row["content_key"], base.path, "ok", samples=stored.meta["samples"],
                            audio={**stored.meta["probe"], "target_sr": self.params.target_sr, "wav": str(stored.path)},
                            seconds=stored.meta.get("seconds", 0.0), cache_hit=found is not None,
                            extractor=self.identity()), found is not None


    def _decode_into(self, store: ArtifactStore, key: ArtifactKey, row: dict, profile: JobProfile,
                     started: float) -> StoredArtifact:
        """Decode, resample and write the WAV a chunk at a time into the store's staging file, then store it:
        memory follows the chunk, not the input's duration (or what its header claims)."""
        staged = store.staging_path(key)
        try:
            with profile.timer("decode"):
                source = open_source(row["path"], decoder=self.decoder)
            limit = int(self.max_hours * 3600 * source.facts.sample_rate)
            decoded = _Counted(source.chunks, profile, max_samples=limit)
            samples = write_wav(staged, resampled(decoded, source.facts.sample_rate, self.params.target_sr,
                                                  timer=profile.timer),
                                sr=self.params.target_sr, subtype=self.params.dtype, timer=profile.timer)
            check_unchanged(row)
            meta = {"probe": decoded_probe(source.facts, decoded.samples).__dict__, "samples": samples,
                    "seconds": round(time.perf_counter() - started, 6)}
            return store.put_file(key, staged, meta)
        finally:
            staged.unlink(missing_ok=True)


class TooLong(DecodeError):
    """More audio than ``audio.max_hours``, found while decoding (its header said less)."""


class _Counted:
    """Decoded chunks, counted, each read timed as decoding; past ``max_samples`` (0: no limit),
    :class:`TooLong`."""

    def __init__(self, chunks, profile: JobProfile, *, max_samples: int = 0) -> None:
        self.chunks, self.profile, self.samples, self.max_samples = chunks, profile, 0, max_samples

    def __iter__(self):
        while True:
            with self.profile.timer("decode"):
                chunk = next(self.chunks, None)
            if chunk is None:
                return
            self.samples += chunk.shape[0]
            if self.max_samples and self.samples > self.max_samples:
                raise TooLong("longer than audio.max_hours: decoding went past the limit (its header declared less)")
            yield chunk


def _failed(base: DecodeRecord, message: str, artifact=None) -> DecodeRecord:
    return dataclasses.replace(base, error=f"decode: {message}", artifact=str(artifact) if artifact else None)


def check_unchanged(row: dict) -> None:
    """Raise :class:`InputChanged` unless the input's stat is the one its content key was hashed under."""
    try:
        now = input_signature(os.stat(row["path"]))
    except OSError:
        raise InputChanged(row["path"]) from None
    if row.get("stat") and now != row["stat"]:
        raise InputChanged(row["path"])
