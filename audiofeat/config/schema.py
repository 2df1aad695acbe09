"""Configuration: schema validation with defaults, environment overrides, thread set-up.

The schema (``config.schema.yaml`` beside this module) is the single source of keys, types and defaults; the
workflow and the library both validate through :func:`validate_config`.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")  # package data: found in a wheel too

# Environment variables users of the previous version know; `--config key=value` wins over them.
ENV_OVERRIDES: dict[str, tuple[str, type]] = {
    "PERF_THREADS": ("perf.threads", int),
    "AUDIO_TARGET_SR": ("audio.target_sr", int),
    "CLAP_ENABLE_AMP": ("clap.enable_amp", bool),
    "CLAP_PRECISION": ("clap.precision", str),
    "CLAP_COMPILE": ("clap.compile", str),
    "CLAP_MAX_BATCH_AUDIO_SECONDS": ("clap.max_batch_audio_seconds", float),
    "SEGMENT_WINDOW_SECONDS": ("segment.window_seconds", float),
    "SEGMENT_HOP_SECONDS": ("segment.hop_seconds", float),
    "SEGMENT_AGGREGATE_MODE": ("segment.aggregate_mode", str),
    "CACHE_DIR": ("cache.dir", str),
    "CACHE_TTL_HOURS": ("cache.ttl_hours", float),
    "CACHE_ENABLED": ("cache.enabled", bool),
    "AUDIOFEAT_EXTRACTORS": ("extractors", list),
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _parse_env_value(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"environment variable {name}={raw!r} must be true or false")
    if kind is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} must be a {kind.__name__}") from None


def _set_dotted(config: dict, dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _has_dotted(config: Mapping, dotted: str) -> bool:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def apply_env_overrides(config: dict, environ: Mapping[str, str], protected: Mapping | None = None) -> dict:
    """Return a copy of ``config`` with the known environment variables applied.

    Keys present in ``protected`` (the ``--config`` overrides) are left alone: command-line values win.
    """
    result = copy.deepcopy(config)
    for name, (dotted, kind) in ENV_OVERRIDES.items():
        if name in environ and environ[name] != "" and not (protected and _has_dotted(protected, dotted)):
            _set_dotted(result, dotted, _parse_env_value(name, environ[name], kind))
    return result


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _coerce_scalar(value: Any, schema: Mapping) -> Any:
    """Typed value for a string that the command line left untyped (Snakemake parses nested ``--config``
    values such as ``clap={enable_amp: false}`` with every scalar as a string)."""
    if not isinstance(value, str):
        return value
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    lowered = value.strip().lower()
    if "null" in types and lowered in ("null", "none", "~"):
        return None
    if "boolean" in types and lowered in ("true", "false"):
        return lowered == "true"
    for kind, cast in (("integer", int), ("number", float)):
        if kind in types:
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def _fill_defaults(instance: Any, schema: Mapping) -> Any:
    if schema.get("type") == "object" and isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _fill_defaults(instance[key], sub)
        return instance
    return _coerce_scalar(instance, schema)


def merge_config(base: Mapping, extra: Mapping) -> dict:
    """A copy of ``base`` with ``extra`` merged in, nested sections key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_config(config: Mapping, schema: Mapping | None = None, *, require_inputs: bool = True,
                    sections: Mapping[str, dict] | None = None) -> dict:
    """Validate ``config`` against the schema, with the extractors' own ``sections`` (``{config key: schema}``),
    and return a copy with every default filled in.

    Raises
    ------
    ConfigError
        Naming the offending key (dotted) and, for enumerations, the allowed values.
    """
    import jsonschema

    schema = copy.deepcopy(schema or load_schema())
    schema["properties"].update(sections or {})
    filled = _fill_defaults(copy.deepcopy(dict(config)), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            raise ConfigError(f"config: {error.message} at {key}; allowed keys: {', '.join(allowed)}")
        if error.validator == "enum":
            raise ConfigError(f"config key {key}: {error.instance!r} is not allowed; allowed values: "
                              f"{', '.join(map(str, error.validator_value))}")
        raise ConfigError(f"config key {key}: {error.message}")
    if require_inputs and not filled["input_dir"] and not filled["input_list"]:
        raise ConfigError("config: set input_dir and/or input_list")
    return filled


def resolve_threads(threads: int, cpu_count: int | None = None) -> int:
    """Thread count for a job: ``threads`` when positive, else min(8, cores)."""
    if threads > 0:
        return threads
    return max(1, min(8, cpu_count or os.cpu_count() or 1))


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def set_thread_env(threads: int) -> None:
    """Export thread counts for OpenMP/MKL/OpenBLAS/numba; call before importing numpy-heavy or torch modules."""
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
