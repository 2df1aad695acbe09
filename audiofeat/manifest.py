"""``audio_manifest_v1``: one record per input, as plain dataclasses that serialise to JSON.

The JSON Schema every produced manifest passes is ``workflow/schemas/manifest.schema.json``.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from .settings import DEFAULT_EXTRACTORS

SCHEMA_NAME = "audio_manifest_v1"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "manifest.schema.json"


@dataclass(frozen=True)
class Source:
    path: str  # path_text(): valid UTF-8 text
    content_key: str
    size_bytes: int
    path_bytes: str | None = None  # base64 of the path's bytes, only where they are not UTF-8

    @classmethod
    def of(cls, path: str, content_key: str, size_bytes: int) -> "Source":
        """The source record of a path as ``os`` gives it (undecodable bytes as lone surrogates)."""
        text = path_text(path)
        exact = None if text == path else base64.b64encode(os.fsencode(path)).decode("ascii")
        return cls(text, content_key, size_bytes, exact)

    @property
    def os_path(self) -> str:
        """The path as ``os`` functions take it, exact also where its bytes are not UTF-8."""
        return os.fsdecode(base64.b64decode(self.path_bytes)) if self.path_bytes else self.path


def path_text(path: str) -> str:
    """``path`` as valid UTF-8 text for JSON, logs and the report: unchanged when its bytes are UTF-8, else each
    byte that is not written ``\\xNN`` (``latin1_\\xe9t\\xe9.wav``). The exact bytes go in ``path_bytes``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str
    target_sr: int
    wav: str


@dataclass(frozen=True)
class AudioManifest:
    """One input's record. ``blocks`` holds each extractor's block by its name (``features``, ``clap``, ...),
    written at the top level of the JSON beside ``audio``; a block may be JSON already serialised (an
    ``orjson.Fragment``, as finalize reads a features artifact from the store)."""

    source: Source
    status: str  # "ok" or "error"
    audiofeat_version: str
    error: str | None = None
    audio: AudioInfo | None = None
    blocks: dict = field(default_factory=dict)
    extractors: dict = field(default_factory=dict)  # name -> {"version", "params_hash"}
    timings: dict = field(default_factory=dict)  # stage -> seconds
    schema: str = SCHEMA_NAME

    def to_dict(self) -> dict:
        """JSON-ready dict without ``None`` fields (:meth:`to_json` refuses NaN and infinity). Lists and dicts
        inside are shared with the record, not copied: records are read-only."""
        data = {f.name: _json_data(getattr(self, f.name)) for f in fields(self)
                if f.name != "blocks" and getattr(self, f.name) is not None}
        return {**data, **self.blocks}

    @classmethod
    def from_dict(cls, data: dict) -> "AudioManifest":
        if data.get("schema") != SCHEMA_NAME:
            raise ValueError(f"not an {SCHEMA_NAME} record: schema={data.get('schema')!r}")
        own = {f.name for f in fields(cls)}
        return cls(
            source=Source(**data["source"]),
            status=data["status"],
            audiofeat_version=data["audiofeat_version"],
            error=data.get("error"),
            audio=AudioInfo(**data["audio"]) if "audio" in data else None,
            blocks={name: value for name, value in data.items() if name not in own},
            extractors=data.get("extractors", {}),
            timings=data.get("timings", {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, allow_nan=False)


def _json_data(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _json_data(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None}
    return value


def run_schema(extractors: Iterable[str]) -> dict:
    """The JSON Schema of a run's manifests: the base (``workflow/schemas/manifest.schema.json``) with the block
    of each of ``extractors`` (registered names), every one of them required of an ``ok`` record."""
    from .extractors import EXTRACTORS

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    names = list(extractors)
    for name in names:
        schema["properties"][name] = EXTRACTORS[name].block_schema
    schema["allOf"][0]["then"]["required"] = ["audio", *names]
    return schema


def validate_manifest(data: dict, extractors: Iterable[str] = DEFAULT_EXTRACTORS) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``data`` is a valid ``audio_manifest_v1`` record of a run of
    ``extractors``."""
    import jsonschema

    jsonschema.Draft202012Validator(run_schema(extractors)).validate(data)
