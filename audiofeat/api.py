"""The Python API: the workflow's extractors and store, called from a notebook on a list of files.

    >>> import audiofeat
    >>> result = audiofeat.extract(["a.wav", "b.mp4"], extractors=["features", "clap"],
    ...                            clap={"checkpoint": "auto"}, cache={"dir": ".cache/audiofeat"})
    >>> result.manifests[0].status, result.embeddings.shape
    ('ok', (2, 512))

A file the workflow (or an earlier call) already processed under the same settings is read from the store, not
recomputed: the keys are the extractors' own, as in the workflow.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import orjson

from .clap import EMBEDDING_DIM
from .config.schema import resolve_threads
from .config.settings import Settings, load_settings
from .extractors.decode import DecodeExtractor
from .extractors.profiling import JobProfile
from .extractors.registry import build_extractors, section_schemas
from .extractors.runner import extract as extract_files
from .extractors.runner import open_store
from .inputs.inventory import StatIndex, identify_inputs
from .outputs.manifest import AudioManifest, build_manifest
from .store.tables import json_line


@dataclass(frozen=True)
class Extraction:
    """One :class:`AudioManifest` per path, in order, and (when CLAP ran) their clip embeddings
    ``[shape=(paths, EMBEDDING_DIM)]`` float32, zero rows for failed files."""

    manifests: list[AudioManifest]
    embeddings: np.ndarray | None


def extract(paths: Iterable[str | os.PathLike], *, extractors: Iterable[str] | None = None,
            settings: Settings | None = None, **sections: Any) -> Extraction:
    """Decode ``paths`` and run ``extractors`` (default: the configuration's, ``features`` and ``clap``) on them.

    ``settings`` is a complete :class:`Settings`; otherwise ``sections`` are config sections as dicts
    (``cache={"dir": ...}``, ``clap={"checkpoint": ...}``, ``perf={"threads": 4}``) over the defaults and the
    environment overrides, validated as the workflow validates them. A file's problem is its manifest's
    ``error``; a fault of the environment (a full disk...) raises.
    """
    if settings is None:
        overrides = {**sections, **({"extractors": list(extractors)} if extractors is not None else {})}
        settings = load_settings(overrides=overrides, sections=section_schemas())
    elif extractors is not None:
        settings = dataclasses.replace(settings, extractors=tuple(extractors))
    threads = resolve_threads(settings.perf.threads)
    store = open_store(settings)
    index = StatIndex(os.path.join(settings.store_dir(), "stat_index.sqlite")) if settings.cache.enabled else None
    try:  # the workflow's stat index: a file it hashed is not hashed again
        inputs = identify_inputs([(os.path.abspath(p), os.fspath(p)) for p in paths], index, threads)
    finally:
        if index is not None:
            index.close()
    profile = JobProfile("api", "api")
    decoder = DecodeExtractor.from_settings(settings)
    by_stage: dict[str, dict[str, dict]] = {"decode": {}}
    unique: dict[str, Any] = {}  # identical contents are computed once, from their first path (it has the stat)
    for f in inputs:
        if f.content_key:
            unique.setdefault(f.content_key, f)
    decoded = [decoder.decode(_row(f), store, profile)[0] for f in unique.values()]
    by_stage["decode"] = {r.content_key: r.to_dict() for r in decoded}
    for name, extractor in build_extractors(settings, job=True).items():
        extractor.use_sources({key: _row(f) for key, f in unique.items()})
        records = extract_files(extractor, decoded, store, threads=threads, profile=JobProfile(name, "api"))
        by_stage[name] = {r.content_key: r.to_dict() for r in records}
    # Through JSON once: blocks read from the store as JSON text become dicts.
    manifests = [AudioManifest.from_dict(orjson.loads(json_line(build_manifest(_row(f), by_stage, list(
        settings.extractors)).to_dict()))) for f in inputs]
    return Extraction(manifests, _embeddings(manifests) if "clap" in settings.extractors else None)


def _row(file) -> dict:
    """An inventory row, as the workflow's shard tables hold it."""
    return {"path": file.path, "relpath": file.relpath, "content_key": file.content_key,
            "size_bytes": str(file.size_bytes), "error": file.error, "stat": file.stat}


def _embeddings(manifests: list[AudioManifest]) -> np.ndarray:
    matrix = np.zeros((len(manifests), EMBEDDING_DIM), dtype=np.float32)
    for index, manifest in enumerate(manifests):
        if manifest.status == "ok":
            matrix[index] = manifest.blocks["clap"]["embedding"]
    return matrix
