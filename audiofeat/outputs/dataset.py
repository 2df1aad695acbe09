"""The dataset as Apache Parquet: one part per shard (``dataset/<shard>.parquet``), one row per input, typed
columns; and the embedding matrix patched in place, row *i* being the dataset's row *i*.

A row holds every field of its input's manifest (:func:`row_manifest` gives the manifest back): the input
(``path``, ``path_bytes``, ``content_key``, ``size_bytes``, ``status``, ``error``, ``audiofeat_version``), the
decoded audio (``duration_s``, ``sample_rate``, ``channels``, ``codec``, ``container``, ``target_sr``, ``wav``),
each stage's ``seconds_<stage>``, each extractor's identity (``<name>_extractor``) and its block as each
extractor's :meth:`~audiofeat.extractors.base.Extractor.columns` gives it: numbers as ``float64``, statistics
vectors as ``list<float64>`` and the embeddings as ``list<float32>``, as computed (not
``fixed_size_list``: pyarrow before 26 cannot read one back with nulls in it, apache/arrow#35692, and failed
inputs' rows are null). Beside them, ``flags``: the reasons a curator would look at the input
(:mod:`.curation`), judged under the run's thresholds; not a manifest field.
Parts sort by shard name, rows within a part by path: reading the folder gives the matrix's order.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..store.artifacts import atomic_write_bytes, blake2b_file
from .manifest import SCHEMA_NAME

BASE_COLUMNS = (("path", "string"), ("path_bytes", "string"), ("content_key", "string"), ("size_bytes", "int64"),
                ("status", "string"), ("error", "string"), ("audiofeat_version", "string"), ("duration_s", "float64"),
                ("sample_rate", "int32"), ("channels", "int32"), ("codec", "string"), ("container", "string"),
                ("target_sr", "int32"), ("wav", "string"))
AUDIO_FIELDS = ("duration_s", "sample_rate", "channels", "codec", "container", "target_sr", "wav")


def part_schema(extractors: dict):
    """The Parquet schema of every part of a run with ``extractors`` ({name: Extractor})."""
    import pyarrow as pa

    fields = [pa.field(name, getattr(pa, kind)()) for name, kind in BASE_COLUMNS]
    for stage in ("decode", *extractors):
        fields += [pa.field(f"seconds_{stage}", pa.float64()), pa.field(f"{stage}_extractor", pa.string())]
    for extractor in extractors.values():
        fields += [pa.field(column, kind) for column, kind in extractor.column_types().items()]
    fields.append(pa.field("flags", pa.list_(pa.string())))  # judged at assembly (outputs.curation); not a field
    return pa.schema(fields)


def manifest_row(manifest: dict, extractors: dict) -> dict:
    """A part's row for one input's manifest dict: every field of it (:func:`row_manifest` gives it back)."""
    source, audio = manifest["source"], manifest.get("audio") or {}
    row = {"path": source["path"], "path_bytes": source.get("path_bytes"), "content_key": source["content_key"],
           "size_bytes": source["size_bytes"], "status": manifest["status"], "error": manifest.get("error"),
           "audiofeat_version": manifest["audiofeat_version"], **{name: audio.get(name) for name in AUDIO_FIELDS}}
    for stage in ("decode", *extractors):
        identity = manifest.get("extractors", {}).get(stage)
        row[f"{stage}_extractor"] = json.dumps(identity, sort_keys=True) if identity else None
        row[f"seconds_{stage}"] = manifest.get("timings", {}).get(stage)
    for name, extractor in extractors.items():
        row.update(extractor.columns(manifest[name]) if name in manifest else {})
    return row


def row_manifest(row: dict, extractors: dict) -> dict:
    """The ``audio_manifest_v1`` dict a dataset row holds (``extractors``: {name: extractor or its class}, the
    run's): what the input's manifest file holds, so that ``outputs.manifests: none`` loses nothing."""
    source = {"path": row["path"], "content_key": row["content_key"], "size_bytes": row["size_bytes"]}
    if row["path_bytes"] is not None:
        source["path_bytes"] = row["path_bytes"]
    manifest = {"schema": SCHEMA_NAME, "source": source, "status": row["status"],
                "audiofeat_version": row["audiofeat_version"]}
    if row["error"] is not None:
        manifest["error"] = row["error"]
    if row["status"] == "ok":
        manifest["audio"] = {name: row[name] for name in AUDIO_FIELDS}
    manifest["extractors"] = {stage: json.loads(row[f"{stage}_extractor"]) for stage in ("decode", *extractors)
                              if row[f"{stage}_extractor"] is not None}
    manifest["timings"] = {stage: row[f"seconds_{stage}"] for stage in ("decode", *extractors)
                           if row[f"seconds_{stage}"] is not None}
    if row["status"] == "ok":
        manifest.update({name: extractor.block_of(row) for name, extractor in extractors.items()})
    return manifest


def dataset_manifests(dataset_dir: str | os.PathLike, *, paths: Iterable[str] = ()) -> Iterator[dict]:
    """Each input's manifest as the dataset at ``dataset_dir`` holds it (of ``paths`` only, when given), in the
    dataset's row order, a batch of rows at a time."""
    import pyarrow.dataset as ds

    from ..extractors.registry import EXTRACTORS

    dataset = ds.dataset(dataset_dir, format="parquet")
    kinds = {name[: -len("_extractor")]: EXTRACTORS[name[: -len("_extractor")]]
             for name in dataset.schema.names if name.endswith("_extractor") and name != "decode_extractor"}
    wanted = list(paths)
    condition = ds.field("path").isin(wanted) if wanted else None
    for fragment in sorted(dataset.get_fragments(filter=condition), key=lambda f: f.path):
        for batch in fragment.to_batches(filter=condition):
            yield from (row_manifest(row, kinds) for row in batch.to_pylist())


def write_part(path: str | os.PathLike, table) -> None:
    """One Parquet part (a pyarrow Table), written atomically (zstd)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write_bytes(path, buffer.getvalue(), durable=False)


@dataclass(frozen=True)
class PartRows:
    """A part of the dataset (its name: ``<shard>-<k>``), its row count and content digest."""

    shard: str
    rows: int
    digest: str


def patch_embeddings(npy_path: str | os.PathLike, parts: list[PartRows], part_path, *, column: str, dim: int,
                     index_path: str | os.PathLike) -> int:
    """Bring a matrix of the list column ``column`` (``embeddings.npy`` of ``clap_embedding``, say)
    ``[shape=(rows, dim)]`` float32 up to date with ``parts`` (in dataset order),
    rewriting only the rows of parts that changed or moved; ``part_path(name)`` is a part's file. The rows of
    inputs that failed are zero. Returns the number of parts whose rows were written.

    The matrix is changed in place, a part's rows at a time; an index (``index_path``, in the bookkeeping folder)
    says which part's rows it holds, and is removed while the matrix changes, so that a finalize killed halfway
    rewrites every part the next time.
    """
    index_path = Path(index_path)
    wanted = [(p.shard, offset, p.rows, p.digest) for p, offset in zip(parts, _offsets(parts))]
    trusted = _held_rows(npy_path, index_path, dim)
    total = sum(p.rows for p in parts)
    index_path.unlink(missing_ok=True)
    data_offset, kept = _sized_matrix(npy_path, total, dim, old_offset=trusted[1] if trusted else None)
    held = trusted[0] if kept else None
    written = 0
    # Written with pwrite, not through a memory map: mapped pages count in the process's RSS, and at a million
    # rows the matrix is 2 GB (finalize peaked at 2.1 GB mapping it); this holds one part's rows at a time.
    fd = os.open(npy_path, os.O_WRONLY)
    try:
        for shard, offset, rows, digest in wanted:
            if held is not None and (shard, offset, rows, digest) in held:
                continue
            os.pwrite(fd, _part_embeddings(part_path(shard), column, rows, dim).tobytes(),
                      data_offset + offset * dim * 4)
            written += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    atomic_write_bytes(index_path, json.dumps([list(w) for w in wanted]).encode(), durable=False)
    return written


def _offsets(parts: list[PartRows]) -> list[int]:
    offsets, at = [], 0
    for part in parts:
        offsets.append(at)
        at += part.rows
    return offsets


def _held_rows(npy_path, index_path: Path, dim: int) -> tuple[set, int] | None:
    """``(the (shard, offset, rows, digest) entries the matrix holds, the byte offset of its data)``, or None
    when it cannot be trusted. Reads the header only (a map would fail on a matrix of no rows)."""
    try:
        entries = {tuple(e) for e in json.loads(index_path.read_text())}
        with open(npy_path, "rb") as handle:
            if np.lib.format.read_magic(handle) != (1, 0):
                return None
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
            data_offset = handle.tell()
    except (OSError, ValueError):
        return None
    if dtype != np.float32 or fortran_order or len(shape) != 2 or shape[1] != dim:
        return None
    return entries, data_offset


def _sized_matrix(npy_path, total: int, dim: int, *, old_offset: int | None) -> tuple[int, bool]:
    """Give ``npy_path`` the header and size of a ``[shape=(total, dim)]`` float32 matrix: ``(byte offset of
    its data, whether its old rows were kept)``. The header is rewritten in place when a trusted old matrix's
    data starts where the new header ends (numpy pads headers to 64 bytes), else the file is new (zeros: a
    sparse file until rows are written)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (total, dim)})
    header = header.getvalue()
    kept = old_offset == len(header)
    with open(npy_path, "r+b" if kept else "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + total * dim * 4)
    return len(header), kept


def _part_embeddings(path, name: str, rows: int, dim: int) -> np.ndarray:
    """A part's list column ``name`` as ``[shape=(rows, dim)]`` float32, zero where an input has none."""
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=[name]).column(0).combine_chunks()
    out = np.zeros((rows, dim), dtype=np.float32)
    valid = ~np.asarray(column.is_null())
    if valid.any():
        values = column.filter(column.is_valid()).flatten().to_numpy(zero_copy_only=False)
        out[valid] = values.reshape(-1, dim)
    return out


def part_digest(path: str | os.PathLike) -> str:
    return blake2b_file(path)


def remove_stale_parts(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Remove parts the run no longer has (of shards the inventory no longer makes, say)."""
    keep = {f"{name}.parquet" for name in names}
    for path in Path(folder).glob("*.parquet"):
        if path.name not in keep:
            path.unlink()
