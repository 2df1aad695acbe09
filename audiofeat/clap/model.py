"""The process's CLAP model: a ready audio tower per (model, weights, device), and the device choice."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from . import MODEL_INPUT_SAMPLES
from .checkpoint import RANDOM_WEIGHTS_SEED, load_audio_weights
from .forward import build_audio_tower

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A ready audio tower, what manifests record about its weights, and ``forward``: the tower itself or its
    compiled graph (the same arithmetic; compiled equals eager within 1e-5, tested)."""

    model: object
    model_name: str
    weights: str  # "laion:<sha256>" or "random(seed=0)"
    device: str
    forward: object = None

    def __post_init__(self) -> None:
        if self.forward is None:
            object.__setattr__(self, "forward", self.model)


def compiled_forward(model, cache_dir: str | None):
    """``torch.compile`` of ``model`` for fixed batch shapes (the embedder pads the last batch), with inductor's
    and Triton's caches under ``cache_dir`` (unless the user set them) so that later jobs reuse the graphs."""
    import torch

    if cache_dir:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_dir, "inductor"))
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(cache_dir, "triton"))
    return torch.compile(model, dynamic=False)


def _no_cuda_here() -> bool:
    """True when no NVIDIA device can be visible (no driver device files, or CUDA_VISIBLE_DEVICES empties the
    list): ``auto`` then means CPU without importing torch, which a job that only reads its cache skips."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return True
    return not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"))


def likely_device(device: str) -> str:
    """The device :func:`resolve_device` gives, judged without importing torch: ``auto`` means CUDA where an
    NVIDIA driver is visible (torch may still see none there; :func:`resolve_device` checks)."""
    if device == "cpu" or (device == "auto" and _no_cuda_here()):
        return "cpu"
    return "cuda" if device == "auto" else device


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda:N`` is checked to exist."""
    if likely_device(device) == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"perf.device={device} but torch sees no CUDA device")
    return device


_models: dict[tuple, LoadedModel] = {}
_models_lock = threading.Lock()


def get_model(model_name: str, checkpoint_path: str | None, weights: str, *, device: str,
              warm_up: bool = True, compiled: bool = False, compile_cache: str | None = None) -> LoadedModel:
    """The process's one model for these settings: built, loaded, moved (and on CUDA warmed up) on first request;
    with ``compiled``, its forward is :func:`compiled_forward` (compiled at its first batch).

    ``checkpoint_path`` and ``weights`` come from :func:`resolve_weights` (None means the seeded random model).
    Thread-safe: concurrent callers wait for the first and get the same object.
    """
    import torch

    key = (model_name, checkpoint_path, device)
    if compiled:
        eager = get_model(model_name, checkpoint_path, weights, device=device, warm_up=warm_up)
        with _models_lock:
            if (key, "compiled") not in _models:
                _models[(key, "compiled")] = LoadedModel(eager.model, model_name, weights, eager.device,
                                                         compiled_forward(eager.model, compile_cache))
            return _models[(key, "compiled")]
    with _models_lock:
        if key in _models:
            return _models[key]
        started = time.perf_counter()
        resolved = resolve_device(device)
        if checkpoint_path is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_WEIGHTS_SEED)
                model = build_audio_tower(model_name)
        else:
            model = build_audio_tower(model_name, initialise=False)
            load_audio_weights(model, checkpoint_path)
        model = model.to(resolved)
        # Warm-up pays on CUDA (library handles, the allocator's first blocks), not on the CPU (docs/benchmarks.md).
        if warm_up and resolved.startswith("cuda"):
            with torch.inference_mode():
                model(torch.zeros(1, MODEL_INPUT_SAMPLES, device=resolved))
        loaded = _models[key] = LoadedModel(model, model_name, weights, resolved)
        logger.info("CLAP %s (%s) ready on %s in %.2f s", model_name, weights, resolved,
                    time.perf_counter() - started)
        return loaded
