"""Every GPU of a node used by a local run: the GPUs are listed once, when the workflow starts, and each CLAP job
claims one of them for itself (a lock only it holds) and sees only that one (``CUDA_VISIBLE_DEVICES``).

Snakemake runs at most as many GPU jobs at once as there are GPUs (the ``gpu`` resource), so a job always finds
a free GPU and never waits for one. On SLURM the scheduler assigns GPUs and this module stays out of the way.
"""
from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
from typing import Callable

logger = logging.getLogger(__name__)


def nvidia_smi_gpus() -> list[str]:
    """Indices of the GPUs ``nvidia-smi -L`` lists (none when it is missing or fails)."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU ")]


def visible_gpus(setting: str | int, *, environ=os.environ,
                 lister: Callable[[], list[str]] = nvidia_smi_gpus) -> list[str]:
    """The GPUs local CLAP jobs share out, from ``perf.gpus``: ``auto`` (those ``CUDA_VISIBLE_DEVICES``
    names when it is set, else those ``lister`` finds), ``none``, a list ``"0,2"``, or a count ``N``
    (the first N)."""
    if isinstance(setting, int) or str(setting).isdigit():
        return [str(i) for i in range(int(setting))]
    if setting == "none":
        return []
    if setting != "auto":
        return [part.strip() for part in str(setting).split(",") if part.strip()]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [part.strip() for part in visible.split(",") if part.strip() not in ("", "-1")]
    return lister()


def slot_dir() -> str:
    """Where GPU locks live: one folder per user and machine, so that two runs on one node share the GPUs too."""
    return os.path.join(tempfile.gettempdir(), f"audiofeat-gpus-{os.getuid()}")


class GpuClaim:
    """A GPU held by this process until it exits (or :meth:`release`): ``gpu`` is its name, ``shared`` says
    every GPU was already held (another run on the node), so this one is shared rather than waited for."""

    def __init__(self, gpu: str, handle, shared: bool) -> None:
        self.gpu, self._handle, self.shared = gpu, handle, shared

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def claim_gpu(gpus: list[str], folder: str | None = None) -> GpuClaim:
    """The first of ``gpus`` no other process holds, locked for this one (a kernel lock: it goes with the
    process, however it ends). Never waits: when every one is held (another run on this node), the first is
    shared, and the claim says so."""
    folder = folder or slot_dir()
    os.makedirs(folder, exist_ok=True)
    for gpu in gpus:
        handle = open(os.path.join(folder, f"{gpu}.lock"), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return GpuClaim(gpu, handle, shared=False)
    logger.warning("every GPU (%s) is held by another job; sharing GPU %s", ",".join(gpus), gpus[0])
    return GpuClaim(gpus[0], None, shared=True)


def local_gpus(settings, *, local: bool) -> list[str]:
    """The GPUs a run shares out between its CLAP jobs: none on a cluster executor (it assigns its own), when
    CLAP does not run, or when ``perf.device`` is ``cpu`` or one named GPU (``cuda:N``: the user's choice)."""
    if not local or "clap" not in settings.extractors or settings.perf.device not in ("auto", "cuda"):
        return []
    return visible_gpus(settings.perf.gpus)


def use_one_gpu(gpus: list[str], environ=os.environ) -> GpuClaim | None:
    """In a local CLAP job, before torch is imported: claim a GPU of ``gpus`` and make it the only one the
    job sees (``cuda`` is then that GPU). None when the run shares out no GPUs (CPU, or SLURM's own)."""
    if not gpus:
        return None
    claim = claim_gpu(gpus)
    environ["CUDA_VISIBLE_DEVICES"] = claim.gpu
    return claim
