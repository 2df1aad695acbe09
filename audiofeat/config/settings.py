"""Typed configuration sections, built once from the validated workflow config.

Library functions take the section they need (``CacheSettings``, ``FeaturesSettings``, ...) instead of the
workflow's config dict, so a call shows what it depends on and can be made without a workflow.
:func:`load_settings` is the one way to read a config file with its environment overrides, for the workflow
and the console script alike.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .layout import bookkeeping
from .schema import apply_env_overrides, merge_config, validate_config

DEFAULT_EXTRACTORS = ("features", "clap")


class _Section:
    """``from_dict`` keeps only the section's fields (the schema has already checked names and types)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CacheSettings(_Section):
    dir: str = ".cache/audiofeat"
    enabled: bool = True
    ttl_hours: float = 0.0
    max_gb: float = 0.0


@dataclass(frozen=True)
class PerfSettings(_Section):
    threads: int = 0
    device: str = "auto"
    loader_processes: int = -1  # -1: auto (CUDA: threads - 1; CPU: none)
    gpus: str = "auto"  # local runs: the GPUs CLAP jobs share out ("auto": nvidia-smi's; "0,1"; "none")


@dataclass(frozen=True)
class AudioSettings(_Section):
    target_sr: int = 48000
    decoder: str = "pyav"
    wav_subtype: str = "float32"


@dataclass(frozen=True)
class ShardSettings(_Section):
    target_files: int = 1024
    target_audio_seconds: float = 7200.0


@dataclass(frozen=True)
class FeaturesSettings(_Section):
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0


@dataclass(frozen=True)
class ClapSettings(_Section):
    model: str = "HTSAT-tiny"
    checkpoint: str = ""
    allow_random_weights: bool = False
    enable_amp: bool = True
    precision: str = "auto"  # auto (fp16 on CUDA when enable_amp, else fp32), fp32, fp16, bf16
    compile: str = "auto"  # auto (CUDA jobs with enough windows), true, false
    max_batch_audio_seconds: float = 160.0


@dataclass(frozen=True)
class SegmentSettings(_Section):
    enabled: bool = True
    window_seconds: float = 10.0
    hop_seconds: float = 5.0
    aggregate_mode: str = "mean"
    save_segments: bool = False


@dataclass(frozen=True)
class Settings:
    """Every section of a validated config; ``extractors`` are the ones this run computes, in order."""

    input_dir: str = ""
    input_list: str = ""
    results_dir: str = "results"
    strict: bool = False
    extractors: tuple[str, ...] = DEFAULT_EXTRACTORS
    shard: ShardSettings = field(default_factory=ShardSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    perf: PerfSettings = field(default_factory=PerfSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    features: FeaturesSettings = field(default_factory=FeaturesSettings)
    clap: ClapSettings = field(default_factory=ClapSettings)
    segment: SegmentSettings = field(default_factory=SegmentSettings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings":
        """From a config that :func:`audiofeat.config.validate_config` returned (every default filled in)."""
        values = {name: kind.from_dict(config.get(name, {})) for name, kind in _SECTIONS.items()}
        scalars = {f.name: config[f.name] for f in fields(cls) if f.name not in _SECTIONS and f.name in config}
        scalars["extractors"] = tuple(scalars.get("extractors", DEFAULT_EXTRACTORS))
        return cls(**scalars, **values)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["extractors"] = list(self.extractors)
        return data

    def store_dir(self) -> str:
        """Where artifacts go: ``cache.dir``, or with the cache off a run-private folder never read back."""
        return self.cache.dir if self.cache.enabled else bookkeeping(self.results_dir, "work")


_SECTIONS = {"shard": ShardSettings, "cache": CacheSettings, "perf": PerfSettings, "audio": AudioSettings,
             "features": FeaturesSettings, "clap": ClapSettings, "segment": SegmentSettings}


def validated_config(config: Mapping[str, Any], *, protected: Mapping[str, Any] | None = None,
                     environ: Mapping[str, str] | None = None, require_inputs: bool = True) -> dict:
    """``config`` with the environment's overrides (not over keys in ``protected``, the command line's), every
    default filled in and validated: what the workflow and :func:`load_settings` both run."""
    with_env = apply_env_overrides(config, os.environ if environ is None else environ, protected=protected)
    return validate_config(with_env, require_inputs=require_inputs)


def load_settings(config_path: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from a YAML file (absent: the defaults), the environment overrides, then ``overrides``, validated
    as the workflow validates them. Raises :class:`audiofeat.config.ConfigError`."""
    import yaml

    config: dict = {}
    if config_path is not None:
        config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    merged = merge_config(config, overrides or {})
    return Settings.from_config(validated_config(merged, protected=overrides, environ=environ, require_inputs=False))
