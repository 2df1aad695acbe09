"""``audiofeat status RESULTS_DIR``: how far a running or finished run is, across shards, from the small files the
jobs keep (their progress and timing profiles), without reading any manifest."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config.layout import bookkeeping

STALE_S = 600  # a running job that has not reported for this long is shown as possibly stopped


@dataclass
class StageStatus:
    """The shard jobs of one stage: how many are done, running, failed or not started, and what is left."""

    stage: str
    done: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0
    files_done: int = 0
    files_total: int = 0
    eta_s: float | None = None  # the running jobs' own estimates, then the pending ones at the done ones' median
    notes: list = field(default_factory=list)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _failed(log: Path) -> bool:
    """A job's log that ends in a fault line or a traceback."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    return "fault: " in text or "Traceback (most recent call last)" in text


def _job_state(kept: Path, stage: str, shard: str, now: float) -> tuple[str, dict | None]:
    progress = _read_json(kept / "progress" / stage / f"{shard}.json")
    profile = kept / "timings" / stage / f"{shard}.json"
    rule = "decode" if stage == "decode" else f"extract_{stage}"
    if progress is None:
        return ("done" if profile.exists() else "pending"), None
    if progress["state"] == "done" and profile.exists():
        return "done", progress
    if _failed(kept / "logs" / rule / f"{shard}.log"):
        return "failed", progress
    return ("stale" if now - progress["updated"] > STALE_S else "running"), progress


def stage_status(kept: Path, stage: str, shards: list[str], now: float) -> StageStatus:
    """One stage's jobs, from the bookkeeping folder ``kept``."""
    status = StageStatus(stage)
    running_eta, walls = [], []
    for shard in shards:
        state, progress = _job_state(kept, stage, shard, now)
        if state == "stale":
            status.notes.append(f"{shard}: no report for {int(now - progress['updated'])} s (stopped?)")
            state = "running"
        setattr(status, state, getattr(status, state) + 1)
        if progress:
            status.files_done += progress["files"]
            status.files_total += progress["total_files"]
            if state == "running" and progress.get("eta_s") is not None:
                running_eta.append(progress["eta_s"])
        if state == "done" and (profile := _read_json(kept / "timings" / stage / f"{shard}.json")):
            walls.append(profile["wall_s"])
    pending_s = status.pending * statistics.median(walls) if walls and status.pending else 0.0
    if running_eta or pending_s:
        status.eta_s = max(running_eta, default=0.0) + pending_s
    return status


def run_status(results_dir: str) -> dict:
    """``{"shards", "stages": [StageStatus], "finished": summary or None}`` of a results folder."""
    kept = Path(bookkeeping(results_dir))
    shards = sorted(p.stem for p in (kept / "inventory" / "shards").glob("*.tsv"))
    stages = ["decode"] + sorted({p.name for folder in ("timings", "progress") for p in (kept / folder).glob("*")
                                  if p.is_dir() and p.name != "decode"})
    now = time.time()
    return {"shards": len(shards), "stages": [stage_status(kept, s, shards, now) for s in stages],
            "finished": _read_json(Path(results_dir) / "summary.json")}


def format_status(status: dict) -> str:
    lines = [f"{status['shards']} shards"]
    for s in status["stages"]:
        eta = "" if s.eta_s is None else f", about {s.eta_s / 60:.1f} min left"
        files = f", {s.files_done}/{s.files_total} files computed in reported jobs" if s.files_total else ""
        lines.append(f"  {s.stage:<10} {s.done} done, {s.running} running, {s.failed} failed, {s.pending} "
                     f"not started{files}{eta}")
        lines += [f"    {note}" for note in s.notes]
    if status["finished"]:
        lines.append(f"last finished run: {status['finished']['ok']} ok, {status['finished']['failed']} failed")
    return "\n".join(lines)
