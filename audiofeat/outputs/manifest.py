"""``audio_manifest_v1``: one record per input, as plain dataclasses that serialise to JSON.

Every manifest passes its run's schema (:func:`run_schema`): the base, ``manifest_base.schema.json`` beside this
module (what every record has, blocks left open), with the block schema of each extractor that ran.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import orjson

from .. import __version__
from ..faults import ArtifactGone
from ..inputs.inventory import path_text
from ..store.artifacts import blake2b_bytes
from ..store.trailer import read_payload

SCHEMA_NAME = "audio_manifest_v1"
BASE_SCHEMA_PATH = Path(__file__).with_name("manifest_base.schema.json")  # package data: found in a wheel too


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


def _stored_block(stage: str, content_key: str, record: dict) -> orjson.Fragment:
    """The block an extractor stored as JSON, checked against the digest its table recorded (the bytes are read
    anyway; hashing them is cheap); :class:`ArtifactGone` when missing or not those bytes."""
    try:
        data = read_payload(record["artifact"])
    except (FileNotFoundError, ValueError):
        raise ArtifactGone(stage, content_key, record["artifact"]) from None
    if blake2b_bytes(data) != record.get("artifact_digest"):
        raise ArtifactGone(stage, content_key, record["artifact"])
    return orjson.Fragment(data)  # inserted unparsed: re-serialising 27 MB of numbers was most of finalize


def build_manifest(row: dict, by_stage: dict[str, dict[str, dict]], extractors: list[str]) -> AudioManifest:
    """One input's ``audio_manifest_v1`` record from its inventory row and its shard records."""
    source = Source.of(row["path"], row["content_key"], int(row["size_bytes"]))
    stages = ["decode", *extractors]
    records = {stage: by_stage.get(stage, {}).get(row["content_key"]) for stage in stages}
    error = row["error"] or next((r["error"] for r in records.values() if r and r["status"] == "error"), None)
    if not error and any(r is None for r in records.values()):
        error = "not processed (its shard job failed; see the logs)"
    identities, timings = {}, {}
    for stage, record in records.items():
        name = "decode" if stage == "decode" else stage
        if record and "extractor" in record:
            identities[name] = record["extractor"]
        if record and "seconds" in record:
            timings[name] = record["seconds"]
    if error:
        return AudioManifest(source=source, status="error", audiofeat_version=__version__, error=error,
                             extractors=identities, timings=timings)
    blocks = {name: records[name]["block"] if "block" in records[name]
              else _stored_block(name, row["content_key"], records[name]) for name in extractors}
    return AudioManifest(source=source, status="ok", audiofeat_version=__version__,
                         audio=AudioInfo(**records["decode"]["audio"]), blocks=blocks, extractors=identities,
                         timings=timings)


def _json_data(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _json_data(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None}
    return value


def run_schema(block_schemas: Mapping[str, dict]) -> dict:
    """The JSON Schema of a run's manifests: the base (``manifest_base.schema.json``) with
    ``block_schemas`` (``{extractor name: its block's schema}``, the run's extractors), every one of them
    required of an ``ok`` record."""
    schema = json.loads(BASE_SCHEMA_PATH.read_text(encoding="utf-8"))
    for name, block in block_schemas.items():
        schema["properties"][name] = block
    schema["allOf"][0]["then"]["required"] = ["audio", *block_schemas]
    return schema


def validate_manifest(data: dict, block_schemas: Mapping[str, dict]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``data`` is a valid ``audio_manifest_v1`` record of a run
    whose extractors' blocks are ``block_schemas``."""
    import jsonschema

    jsonschema.Draft202012Validator(run_schema(block_schemas)).validate(data)
