"""Typed configuration sections, built once from the validated workflow config.

Library functions take the section they need (``CacheSettings``, an extractor's own section, ...) instead of the
workflow's config dict, so a call shows what it depends on and can be made without a workflow.
:func:`load_settings` is the one way to read a config file with its environment overrides, for the workflow
and the console script alike.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from .layout import bookkeeping
from .schema import apply_env_overrides, merge_config, validate_config

DEFAULT_EXTRACTORS = ("features", "clap")
S = TypeVar("S", bound="Section")


class Section:
    """A config section as a frozen dataclass. ``from_dict`` keeps only the section's fields (the schema has
    already checked names and types). An extractor's own section also sets ``name`` (its config key) and
    ``properties`` (JSON Schema of each field, without defaults: the fields' defaults are the schema's)."""

    name: ClassVar[str] = ""
    properties: ClassVar[dict] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def json_schema(cls) -> dict:
        """The section's JSON Schema, with each field's default."""
        defaults = {f.name: f.default for f in fields(cls)}
        return {"type": "object", "additionalProperties": False, "default": {},
                "properties": {key: {**schema, "default": defaults[key]} for key, schema in cls.properties.items()}}


@dataclass(frozen=True)
class CacheSettings(Section):
    dir: str = ".cache/audiofeat"
    enabled: bool = True
    ttl_hours: float = 0.0
    max_gb: float = 0.0
    gc_grace_hours: float = 1.0  # what any run used this recently is never collected


@dataclass(frozen=True)
class PerfSettings(Section):
    threads: int = 0
    device: str = "auto"
    loader_processes: int = -1  # -1: auto (CUDA: threads - 1; CPU: none)
    gpus: str = "auto"  # local runs: the GPUs CLAP jobs share out ("auto": nvidia-smi's; "0,1"; "none")


@dataclass(frozen=True)
class AudioSettings(Section):
    target_sr: int = 48000
    decoder: str = "pyav"
    max_hours: float = 24.0  # longer inputs are verdicts (0: no limit)
    wav_subtype: str = "float32"


@dataclass(frozen=True)
class ShardSettings(Section):
    target_files: int = 4096
    target_audio_seconds: float = 28800.0


@dataclass(frozen=True)
class OutputsSettings(Section):
    manifests: str = "files"  # "none": the dataset's rows are the manifests (no file per input)


@dataclass(frozen=True)
class FlagsSettings(Section):
    """When an input is flagged for a curator (the dataset's ``flags`` column, the report's lists)."""

    clipping_ratio: float = 0.001  # loudness.clipping_ratio at or above: "clipped"
    silent_frame_ratio: float = 0.95  # loudness.silent_frame_ratio at or above: "silent"
    upsampled_bandwidth: float = 0.5  # loudness.effective_bandwidth_hz under this share of Nyquist: "upsampled"
    no_speech_ratio: float = 0.01  # speech.speech_ratio under: "no speech"
    low_quality_mos: float = 3.0  # speech_quality.ovrl_mos under: "low speech quality"


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
    outputs: OutputsSettings = field(default_factory=OutputsSettings)
    flags: FlagsSettings = field(default_factory=FlagsSettings)
    sections: Mapping[str, Mapping] = field(default_factory=dict)  # the extractors' own sections, by config key

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings":
        """From a config that :func:`audiofeat.config.validate_config` returned (every default filled in)."""
        values = {name: kind.from_dict(config.get(name, {})) for name, kind in _SECTIONS.items()}
        own = {f.name for f in fields(cls)}
        scalars = {name: config[name] for name in own - {*_SECTIONS, "sections"} if name in config}
        scalars["extractors"] = tuple(scalars.get("extractors", DEFAULT_EXTRACTORS))
        sections = {k: dict(v) for k, v in config.items() if k not in own and isinstance(v, Mapping)}
        return cls(**scalars, **values, sections=sections)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["extractors"] = list(self.extractors)
        return {**data.pop("sections"), **data}

    def of(self, kind: type[S]) -> S:
        """An extractor's own section (``kind.name`` in the config), typed; its defaults where the config has
        none."""
        return kind.from_dict(self.sections.get(kind.name, {}))

    def store_dir(self) -> str:
        """Where artifacts go: ``cache.dir``, or with the cache off a run-private folder never read back."""
        return self.cache.dir if self.cache.enabled else bookkeeping(self.results_dir, "work")


_SECTIONS = {"shard": ShardSettings, "cache": CacheSettings, "perf": PerfSettings, "audio": AudioSettings,
             "outputs": OutputsSettings, "flags": FlagsSettings}


def validated_config(config: Mapping[str, Any], *, sections: Mapping[str, dict],
                     protected: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                     require_inputs: bool = True) -> dict:
    """``config`` with the environment's overrides (not over keys in ``protected``, the command line's), every
    default filled in and validated: what the workflow and :func:`load_settings` both run. ``sections`` are the
    extractors' own sections' schemas (``audiofeat.extractors.registry.section_schemas()``)."""
    with_env = apply_env_overrides(config, os.environ if environ is None else environ, protected=protected)
    return validate_config(with_env, require_inputs=require_inputs, sections=sections)


def load_settings(config_path: str | os.PathLike | None = None, *, sections: Mapping[str, dict],
                  environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from a YAML file (absent: the defaults), the environment overrides, then ``overrides``, validated
    as the workflow validates them (``sections``: as :func:`validated_config`). Raises
    :class:`audiofeat.config.ConfigError`."""
    import yaml

    config: dict = {}
    if config_path is not None:
        config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    merged = merge_config(config, overrides or {})
    return Settings.from_config(validated_config(merged, protected=overrides, environ=environ, require_inputs=False,
                                                 sections=sections))
