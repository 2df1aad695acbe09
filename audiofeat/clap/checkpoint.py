"""LAION CLAP checkpoints: the published files, their digests (remembered by stat), reading the audio tower's
tensors safely, and the weights identity that manifests and artifact keys carry."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..faults import Fault

if TYPE_CHECKING:
    from ..config.settings import CacheSettings
    from ..extractors.clap import ClapSettings

logger = logging.getLogger(__name__)

AUDIO_KEY_PREFIXES = ("audio_branch.", "audio_projection.")
RANDOM_WEIGHTS_SEED = 0

# LAION's published non-fusion checkpoints, one per audio tower (github.com/LAION-AI/CLAP, "pretrained models").
PUBLISHED_CHECKPOINTS = {
    "HTSAT-tiny": ("https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt",
                   "630k-audioset-best.pt"),
    "HTSAT-base": ("https://huggingface.co/lukewys/laion_clap/resolve/main/music_audioset_epoch_15_esc_90.14.pt",
                   "music_audioset_epoch_15_esc_90.14.pt"),
}


class CheckpointError(Fault):
    """A CLAP checkpoint cannot be used; the message names the file and what to do."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(path: str | os.PathLike, index_dir: str | os.PathLike | None, *,
                      remembered_only: bool = False) -> str | None:
    """sha256 of a checkpoint file, remembered in ``index_dir/sha256-by-stat.json`` under its real path, size,
    mtime and inode (as the inventory's stat index does for inputs): a job hashes a LAION file of several GB only
    when it changed on disk. ``index_dir=None`` hashes every time; ``remembered_only`` returns None instead of
    hashing."""
    from ..store.artifacts import atomic_write_text

    real = os.path.realpath(path)
    st = os.stat(real)
    stat = [st.st_size, st.st_mtime_ns, st.st_ino]
    index_path = Path(index_dir) / "sha256-by-stat.json" if index_dir is not None else None
    index: dict = {}
    if index_path is not None:
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}
        entry = index.get(real)
        if isinstance(entry, dict) and entry.get("stat") == stat:
            return entry["sha256"]
    if remembered_only:
        return None
    digest = sha256_file(real)
    if index_path is not None:
        index[real] = {"stat": stat, "sha256": digest}
        try:
            index_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(index_path, json.dumps(index, indent=1))  # a concurrent job's entry may be lost: harmless
        except OSError:
            pass  # a read-only cache only costs the hashing
    return digest


def read_audio_state(path: str | os.PathLike) -> dict:
    """Audio-tower tensors of a LAION checkpoint (``{"state_dict": {"module.<key>": tensor}}`` or a bare
    state dict), loaded with ``weights_only=True``: a pickle that carries code is refused."""
    import torch

    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as handle:
        if not is_zip and handle.read(1) != b"\x80":  # torch.save writes a zip archive, or (legacy) a pickle
            raise CheckpointError(f"CLAP checkpoint {path}: not a torch checkpoint (neither a complete zip archive "
                                  "nor a pickle: damaged, truncated or another kind of file)")
    try:
        # Memory-mapped, only the audio tensors are read from disk, not the text tower and optimizer state that
        # LAION's files also hold; a file in torch's legacy format cannot be mapped and is read whole.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"CLAP checkpoint {path}: refused, not a plain tensor checkpoint "
                              f"(torch.load weights_only=True: {first})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file raises RuntimeError, KeyError, EOFError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"CLAP checkpoint {path}: cannot be read ({type(exc).__name__}: {first})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"CLAP checkpoint {path}: no state_dict inside")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.startswith(AUDIO_KEY_PREFIXES)}


def load_audio_weights(model, path: str | os.PathLike) -> None:
    """Load the audio keys of ``path`` into ``model``; every audio key must match, in name and shape."""
    state = read_audio_state(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        parts = ([f"missing audio keys: {show(missing)}"] if missing else []) + \
                ([f"unexpected audio keys: {show(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"CLAP checkpoint {path} does not fit this audio tower: " + "; ".join(parts)
                              + " (is clap.model right?)")
    bad_shapes = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad_shapes:
        raise CheckpointError(f"CLAP checkpoint {path}: shape mismatch for {', '.join(bad_shapes[:5])} "
                              "(is clap.model right?)")
    model.load_state_dict(state, strict=True)


def fetch_published_checkpoint(model_name: str, cache_dir: str | os.PathLike,
                               timeout_s: float = 10.0) -> tuple[Path, str]:
    """``(path, sha256)`` of LAION's published checkpoint for ``model_name``, downloaded once into
    ``cache_dir/checkpoints``.

    The sha256 of the first download is written beside it and checked on every later use (rehashed whenever the
    file's size, mtime or inode changed, see :func:`checkpoint_sha256`), so a file replaced or truncated in the
    cache is caught.
    """
    url, name = PUBLISHED_CHECKPOINTS[model_name]
    target = Path(cache_dir) / "checkpoints" / name
    digest_file = target.with_name(name + ".sha256")
    if target.exists() and digest_file.exists():
        digest = checkpoint_sha256(target, target.parent)
        if digest == digest_file.read_text().strip():
            return target, digest
        logger.warning("cached checkpoint %s does not match its recorded sha256; downloading again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(
            f"clap.checkpoint: auto could not download {url} ({reason}): download it where you can and set "
            "clap.checkpoint to its path (for random weights: clap.checkpoint: '' with "
            "clap.allow_random_weights: true)") from None
    os.replace(partial, target)
    digest = checkpoint_sha256(target, target.parent)
    digest_file.write_text(digest + "\n")
    return target, digest


def resolve_weights(clap: "ClapSettings", cache: "CacheSettings") -> tuple[str | None, str]:
    """``(checkpoint path or None, weights identity)`` for ``clap.checkpoint``: LAION's published file downloaded
    once for ``auto``, a file's digest remembered under ``cache.dir/checkpoints`` by its stat (with the cache on).

    The identity (``laion:sha256:<hex>`` or ``random(seed=0)``) goes into manifests and artifact keys.
    """
    checkpoint, model_name, cache_dir = clap.checkpoint, clap.model, cache.dir
    if checkpoint == "auto":  # the download's digest, checked on the way: no second hash
        path, digest = fetch_published_checkpoint(model_name, cache_dir)
        return str(path), f"laion:sha256:{digest}"
    if not checkpoint:
        if not clap.allow_random_weights:
            raise CheckpointError("no CLAP weights: set clap.checkpoint to a LAION checkpoint file (or 'auto'), "
                                  "or clap.allow_random_weights: true for a seeded random model")
        return None, f"random(seed={RANDOM_WEIGHTS_SEED})"
    if not os.path.exists(checkpoint):
        raise CheckpointError(f"clap.checkpoint {checkpoint!r} does not exist")
    index_dir = Path(cache_dir) / "checkpoints" if cache.enabled else None
    return checkpoint, f"laion:sha256:{checkpoint_sha256(checkpoint, index_dir)}"


def checkpoint_file(clap: "ClapSettings", cache_dir: str | os.PathLike) -> Path | None:
    """The file ``clap.checkpoint`` names: for ``auto``, LAION's published file's place under
    ``cache_dir/checkpoints`` (None for a model LAION published none for); None when it is empty."""
    if not clap.checkpoint:
        return None
    if clap.checkpoint != "auto":
        return Path(clap.checkpoint)
    published = PUBLISHED_CHECKPOINTS.get(clap.model)
    return Path(cache_dir) / "checkpoints" / published[1] if published else None


def known_weights(clap: "ClapSettings", cache: "CacheSettings") -> str | None:
    """The weights identity :func:`resolve_weights` gives for these settings when it is known without hashing or
    downloading a checkpoint (a digest remembered under ``cache.dir``), else None."""
    if not clap.checkpoint:
        return f"random(seed={RANDOM_WEIGHTS_SEED})" if clap.allow_random_weights else None
    path = checkpoint_file(clap, cache.dir)
    if path is None or not path.exists():
        return None
    digest = checkpoint_sha256(path, Path(cache.dir) / "checkpoints", remembered_only=True)
    return f"laion:sha256:{digest}" if digest else None
