"""Preflight: configuration problems found at workflow start, before any work, each as one line.

Cheap by design: no torch import, no hashing; a checkpoint is recognised by its pickle's key names, the ``auto``
checkpoint's server by one HEAD request (only when the file is not already in the store).
"""
from __future__ import annotations

import os
import secrets
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .faults import free_bytes

if TYPE_CHECKING:
    from .config.settings import Settings

# Under this much free space on the store's disk the run is warned: about 90 minutes of decoded audio
# (48 kHz float32 mono WAV, 11.5 MB a minute), less than one feature film.
LOW_DISK_BYTES = 1024**3
_LAION_KEY = b"audio_branch."
_LEGACY_HEAD_BYTES = 16 << 20  # a legacy (non-zip) torch pickle names its keys before its tensor data


class PreflightError(ValueError):
    """One or more configuration problems; the message has one line per problem."""


def preflight(settings: "Settings", *, check_device: bool = True) -> list[str]:
    """Check a run's settings before any work; raise :class:`PreflightError` naming every problem, else return
    warnings. ``check_device`` is off where jobs run on other machines (a cluster's nodes)."""
    from .extractors.clap import ClapSettings  # torch-free

    clap, cache, uses_clap = settings.of(ClapSettings), settings.cache, "clap" in settings.extractors
    problems = [
        input_problem("input_dir", settings.input_dir, folder=True) if settings.input_dir else None,
        input_problem("input_list", settings.input_list, folder=False) if settings.input_list else None,
        checkpoint_problem(clap.checkpoint, allow_random_weights=clap.allow_random_weights,
                           model_name=clap.model, cache_dir=cache.dir) if uses_clap else None,
        folder_problem("cache.dir", cache.dir) if cache.enabled else None,
        folder_problem("results_dir", settings.results_dir),
        device_problem(settings.perf.device) if check_device and uses_clap else None,
    ]
    problems = [p for p in problems if p]
    if problems:
        raise PreflightError("\n".join(problems))
    warning = disk_warning(settings.store_dir())
    return [warning] if warning else []


def checkpoint_problem(checkpoint: str, *, allow_random_weights: bool, model_name: str,
                       cache_dir: str) -> str | None:
    """Why ``clap.checkpoint`` cannot give weights, in one line naming the key and the fix; None when it can."""
    if not checkpoint:
        if allow_random_weights:
            return None
        return ("clap.checkpoint is empty and clap.allow_random_weights is false: set clap.checkpoint to a LAION "
                "checkpoint file (or 'auto'), or clap.allow_random_weights: true for a seeded random model")
    if checkpoint == "auto":
        return _auto_problem(model_name, cache_dir)
    if not os.path.exists(checkpoint):
        return f"clap.checkpoint {checkpoint!r} does not exist: set it to a LAION checkpoint file"
    if not os.access(checkpoint, os.R_OK) or os.path.isdir(checkpoint):
        return f"clap.checkpoint {checkpoint!r} cannot be read: fix its permissions or point it at a readable file"
    if not _looks_like_laion(checkpoint):
        return (f"clap.checkpoint {checkpoint!r} is not a LAION CLAP checkpoint (no '{_LAION_KEY.decode()}' keys in "
                "a torch file): point it at e.g. 630k-audioset-best.pt")
    return None


def _auto_problem(model_name: str, cache_dir: str) -> str | None:
    """``auto`` is LAION's published file: fine when it is in ``cache_dir/checkpoints`` or its server answers.
    It never means random weights (``clap.allow_random_weights`` applies to an empty ``clap.checkpoint`` only)."""
    from .clap.checkpoint import PUBLISHED_CHECKPOINTS  # a torch-free module

    if model_name not in PUBLISHED_CHECKPOINTS:
        return f"clap.checkpoint: auto has no published file for clap.model {model_name!r}: set a checkpoint path"
    url, name = PUBLISHED_CHECKPOINTS[model_name]
    cached = Path(cache_dir) / "checkpoints" / name
    if cached.exists() and cached.with_name(name + ".sha256").exists():
        return None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            return None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return (f"clap.checkpoint: auto needs LAION's {name}, which is not in {cached.parent} and {url} cannot be "
                f"reached ({reason}): download it where you can and set clap.checkpoint to its path (for random "
                "weights: clap.checkpoint: '' with clap.allow_random_weights: true)")


def _looks_like_laion(path: str) -> bool:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                return bool(pickles) and _LAION_KEY in archive.read(pickles[0])
        with open(path, "rb") as handle:
            head = handle.read(_LEGACY_HEAD_BYTES)
        return head[:1] == b"\x80" and _LAION_KEY in head
    except (OSError, zipfile.BadZipFile):
        return False


def input_problem(key: str, path: str, *, folder: bool) -> str | None:
    """Why the inputs ``path`` (config ``key``: a folder to scan, or a file listing paths) cannot be read, or
    None. A mistyped folder would otherwise be found only by the inventory job, as a fault of the disk."""
    kind = "folder" if folder else "file"
    if not os.path.exists(path):
        return f"{key} {path} does not exist: set {key} to the {kind} of your inputs"
    if folder != os.path.isdir(path):
        return f"{key} {path} is not a {kind}: set {key} to the {kind} of your inputs"
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        return f"{key} {path} cannot be read (permission denied): fix its permissions or set {key} elsewhere"
    return None


def folder_problem(key: str, folder: str) -> str | None:
    """Why ``folder`` (config ``key``) cannot take the run's files, or None: it is created if missing and a file
    is written and removed in it."""
    probe = Path(folder) / f".audiofeat-preflight-{secrets.token_hex(4)}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{key} {folder} cannot be written ({exc.strerror}): fix its permissions or set {key} elsewhere"
    return None


def device_problem(device: str) -> str | None:
    """Whether ``perf.device`` names a device this machine has, judged from the driver's files (no torch)."""
    if device in ("auto", "cpu"):
        return None
    count = visible_gpu_count()
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if count == 0:
        return f"perf.device is {device!r} but no NVIDIA GPU is visible here: set perf.device: auto or cpu"
    if index >= count:
        return f"perf.device is {device!r} but {count} GPU(s) are visible (cuda:0..cuda:{count - 1}): pick one of them"
    return None


def visible_gpu_count() -> int:
    """NVIDIA GPUs this process may use: the driver's device list, narrowed by ``CUDA_VISIBLE_DEVICES``."""
    gpus = Path("/proc/driver/nvidia/gpus")
    present = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"]) if present else 0


def disk_warning(folder: str) -> str | None:
    """A warning when the disk under ``folder`` has less than :data:`LOW_DISK_BYTES` free."""
    free = free_bytes(folder)
    if free is None or free >= LOW_DISK_BYTES:
        return None
    return (f"{folder} has {free / 1024**2:.0f} MiB free; decoded audio takes 11.5 MB a minute: free space or "
            "point CACHE_DIR elsewhere before a large run")


# What a new file costs the store: its WAV (float32: 4 bytes a sample), plus its features block and CLAP arrays
# (medians of the test suite's artifacts: 26.5 kB and 5.4 kB, trailers 0.3 kB each).
WAV_BYTES_PER_SECOND_PER_HZ = 4
OTHER_BYTES_PER_FILE = 33_000


def store_growth(audio_seconds: float, files: int, *, target_sr: int) -> int:
    """Bytes decoding ``files`` new files of ``audio_seconds`` in all adds to the store (the WAVs, and the
    files' other artifacts)."""
    return int(audio_seconds * target_sr * WAV_BYTES_PER_SECOND_PER_HZ) + OTHER_BYTES_PER_FILE * files


def growth_report(audio_seconds: float, files: int, *, target_sr: int, store_dir: str) -> tuple[str, str | None]:
    """``(log line, warning or None)`` on what this run adds to the store against the free space there."""
    growth, free = store_growth(audio_seconds, files, target_sr=target_sr), free_bytes(store_dir)
    line = (f"store: this run adds about {growth / 1e9:.2f} GB ({files} new contents), "
            f"{'?' if free is None else f'{free / 1e9:.2f}'} GB free")
    if free is None or growth <= free:
        return line, None
    return line, (f"this run will write about {growth / 1e9:.2f} GB to the store and its disk has {free / 1e9:.2f} GB "
                  "free: free space or point CACHE_DIR elsewhere (the run stops cleanly when full)")
