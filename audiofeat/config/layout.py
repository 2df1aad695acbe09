"""Where a run's files go inside ``results_dir``: what users open at the top, everything else in one
bookkeeping folder. The one definition of the results folder's layout, for the rules, the jobs and
``audiofeat status``; :func:`move_old_layout` carries a folder written before this layout over to it."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

# What a user opens, at the top of results_dir.
USER_ENTRIES = ("manifests", "dataset", "embeddings.npy", "speaker_embeddings.npy", "summary.json",
                "manifest.schema.json", "report")
# Everything else: shard tables, inventory, logs, profiles, progress, Snakemake's benchmarks, state files.
BOOKKEEPING = "bookkeeping"

# Entries a results folder held beside the user's before the bookkeeping folder (besides one table folder per
# extractor), and their names now: the decode stage's tables and profiles were called "ingest".
_OLD_ENTRIES = {"assembled": "assembled", "benchmarks": "benchmarks", "ingest": "decode", "inventory": "inventory",
                "logs": "logs", "previous": "previous", "progress": "progress", "timings": "timings",
                "status": "status", "work": "work", "run_state.json": "run_state.json",
                "inventory.state.json": "inventory.state.json", "embeddings.npy.index.json": "embeddings.index.json"}
_OLD_STAGE_FOLDERS = {"logs/ingest_decode": "logs/decode", "benchmarks/ingest_decode": "benchmarks/decode",
                      "progress/ingest": "progress/decode", "timings/ingest": "timings/decode"}


def bookkeeping(results_dir: str, *parts: str) -> str:
    """A path inside the run's bookkeeping folder."""
    return os.path.join(results_dir, BOOKKEEPING, *parts)


# A bookkeeping file of one shard or path group: <shard>.<anything> (the names inventory.plan_shards gives).
_SHARD_FILE = re.compile(r"(n[0-9]+-[0-9]+)[.]")


def remove_retired_shards(results_dir: str, planned: set[str]) -> int:
    """Remove the bookkeeping files (tables, profiles, progress, logs, benchmarks, indexes) of shards no longer
    planned, whose names a re-plan retired (the inputs grew past a power of two, the shard targets changed);
    returns how many. The inventory rewrites its own tables; nothing in the store is touched."""
    removed, top = 0, bookkeeping(results_dir)
    for folder, subfolders, names in os.walk(top):
        if folder == top:
            subfolders[:] = [name for name in subfolders if name not in ("inventory", "work")]
        for name in names:
            match = _SHARD_FILE.match(name)
            if match and match.group(1) not in planned:
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def move_old_layout(results_dir: str, extractor_names: list[str]) -> list[str]:
    """Move what a run before the bookkeeping folder left at the top of ``results_dir`` into it, under today's
    names (renames keep each file's mtime, so Snakemake finds finished jobs finished); returns what moved. A
    folder already in the new layout, or not a results folder, is left alone."""
    top, target = Path(results_dir), Path(bookkeeping(results_dir))
    if target.exists() or not (top / "inventory" / "files.tsv").is_file():
        return []
    moves = {**_OLD_ENTRIES, **{name: name for name in extractor_names if (top / name).is_dir()}}
    moved = []
    target.mkdir()
    for old, new in moves.items():
        if (top / old).exists():
            os.rename(top / old, target / new)
            moved.append(old)
    for old, new in _OLD_STAGE_FOLDERS.items():
        _rename_stage_folder(target / old, target / new)
    return moved


def _rename_stage_folder(old: Path, new: Path) -> None:
    """The decode stage's per-shard folder under its new name; its job profiles say their stage (the report
    groups by it), rewritten in place with their mtimes kept."""
    if not old.is_dir():
        return
    os.rename(old, new)
    for path in new.glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("stage") == "ingest":
            st = path.stat()
            path.write_text(json.dumps({**record, "stage": "decode"}), encoding="utf-8")
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
