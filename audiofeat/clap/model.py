"""LAION CLAP's audio tower (HTSAT + audio projection), built from laion-clap's own module code.

``import laion_clap`` loads text tokenizers from the model hub at import time, and ``CLAP_Module`` builds the text
tower from the hub. We need neither: the ``laion_clap/clap_module`` folder is mounted under a private package name
(without running laion-clap's ``__init__`` files) so that ``htsat.py`` and its relatives import offline.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import pickle
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..faults import Fault

logger = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = 48000
MODEL_INPUT_SAMPLES = 480000  # 10 s: HTSAT's clip_samples
AUDIO_KEY_PREFIXES = ("audio_branch.", "audio_projection.")
RANDOM_WEIGHTS_SEED = 0

# LAION's published non-fusion checkpoints, one per audio tower (github.com/LAION-AI/CLAP, "pretrained models").
PUBLISHED_CHECKPOINTS = {
    "HTSAT-tiny": ("https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt",
                   "630k-audioset-best.pt"),
    "HTSAT-base": ("https://huggingface.co/lukewys/laion_clap/resolve/main/music_audioset_epoch_15_esc_90.14.pt",
                   "music_audioset_epoch_15_esc_90.14.pt"),
}

_PRIVATE_PACKAGE = "_audiofeat_laion_clap"


class CheckpointError(Fault):
    """A CLAP checkpoint cannot be used; the message names the file and what to do."""


def _clap_module_dir() -> Path:
    spec = importlib.util.find_spec("laion_clap")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("laion-clap is not installed (pip install laion-clap)")
    return Path(list(spec.submodule_search_locations)[0]) / "clap_module"


# Top-level imports of laion's clap_module/utils.py that its two helpers htsat.py imports (do_mixup, interpolate)
# never use: torchvision alone took 1.1 s of a CLAP job's start here (it imports torch._dynamo).
_UTILS_IMPORTS_SKIPPED = ("torchvision", "h5py", "tqdm")


def _load_laion_utils(package: str) -> None:
    """Run laion's ``utils.py`` as ``<package>.utils`` without its training-only imports (a function that needed
    one would raise NameError when called; the audio tower calls none)."""
    path = _clap_module_dir() / "utils.py"
    tree = ast.parse(path.read_text(), filename=str(path))

    def skipped(node) -> bool:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        return any(n.split(".")[0] in _UTILS_IMPORTS_SKIPPED for n in names)

    tree.body = [node for node in tree.body if not skipped(node)]
    module = types.ModuleType(f"{package}.utils")
    module.__file__ = str(path)
    module.__package__ = package
    exec(compile(tree, str(path), "exec"), module.__dict__)  # noqa: S102 - laion-clap's own installed source
    sys.modules[module.__name__] = module


def laion_module(name: str) -> types.ModuleType:
    """Import ``laion_clap.clap_module.<name>`` offline, under a private package name."""
    package = f"{_PRIVATE_PACKAGE}.clap_module"
    if package not in sys.modules:
        root = types.ModuleType(_PRIVATE_PACKAGE)
        root.__path__ = []
        sub = types.ModuleType(package)
        sub.__path__ = [str(_clap_module_dir())]
        sys.modules.setdefault(_PRIVATE_PACKAGE, root)
        sys.modules.setdefault(package, sub)
        _load_laion_utils(package)
    return importlib.import_module(f"{package}.{name}")


@contextlib.contextmanager
def _torchlibrosa_constants_from_audiofeat():
    """While HTSAT is constructed, torchlibrosa's STFT window and mel filterbank come from :mod:`audiofeat.dsp`.

    torchlibrosa computes them with librosa, and the first touch of ``librosa.filters`` imports scipy.signal,
    scipy.stats and numba: 2.3 s of a CLAP job's start here, for constants that are model parameters (a
    checkpoint overwrites them). audiofeat.dsp gives librosa's values (tested).
    """
    import numpy as np
    import torchlibrosa.stft as torchlibrosa_stft

    from .. import dsp

    def get_window(window, win_length, fftbins=True):
        if not fftbins:
            raise ValueError("torchlibrosa asked for a symmetric window; audiofeat.dsp has periodic ones only")
        return dsp.get_window(window, win_length).astype(np.float64)

    def mel(sr, n_fft, n_mels, fmin, fmax):
        return dsp.mel_filters(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).copy()  # a writable copy

    original = torchlibrosa_stft.librosa
    torchlibrosa_stft.librosa = types.SimpleNamespace(filters=types.SimpleNamespace(get_window=get_window, mel=mel),
                                                      util=types.SimpleNamespace(pad_center=dsp.pad_center))
    try:
        yield
    finally:
        torchlibrosa_stft.librosa = original


def audio_config(model_name: str) -> dict:
    """``audio_cfg`` and ``embed_dim`` of a laion-clap model config (``HTSAT-tiny``, ``HTSAT-base``)."""
    path = _clap_module_dir() / "model_configs" / f"{model_name}.json"
    if not path.exists():
        raise ValueError(f"unknown CLAP model {model_name!r}")
    return json.loads(path.read_text())


@contextlib.contextmanager
def _random_init_skipped(htsat):
    """While a tower is built for a checkpoint that overwrites every parameter, its random initialisation is
    skipped (0.45 s of a CLAP job's start here): torch.nn.init's random initialisers and laion's ``trunc_normal_``
    leave tensors as allocated, as transformers' ``no_init_weights`` does, and torchlibrosa's DFT matrix, also a
    parameter, is not computed. The patch is process-wide while it lasts: :func:`get_model` builds under its lock."""
    import numpy as np
    import torch.nn.init as init
    import torchlibrosa.stft as torchlibrosa_stft

    def leave(tensor, *args, **kwargs):
        return tensor

    patched = [(init, name, leave) for name in ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_",
                                                "kaiming_normal_", "xavier_uniform_", "xavier_normal_")]
    patched += [(htsat, "trunc_normal_", leave),
                (torchlibrosa_stft.DFTBase, "dft_matrix", lambda self, n: np.zeros((n, n), dtype=np.complex128))]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    for owner, name, replacement in patched:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def build_audio_tower(model_name: str, *, initialise: bool = True):
    """The HTSAT audio branch and projection of ``model_name``, in eval mode: randomly initialised (seed the torch
    generator first for reproducible weights), or with ``initialise=False`` left as allocated, for a caller that
    loads a checkpoint over every parameter."""
    import torch
    from torch import nn

    cfg = audio_config(model_name)
    # htsat reads the config's attributes only; laion's CLAPAudioCfp lives in model.py, which imports
    # transformers (about two seconds), so a namespace with the same fields stands in for it.
    audio_cfg = types.SimpleNamespace(**cfg["audio_cfg"])
    htsat = laion_module("htsat")

    class ClapAudioTower(nn.Module):
        """``forward(waveform [shape=(batch, 480000)]) -> unit embeddings [shape=(batch, 512)]``."""

        def __init__(self) -> None:
            super().__init__()
            with _torchlibrosa_constants_from_audiofeat():
                self.audio_branch = htsat.create_htsat_model(audio_cfg, enable_fusion=False, fusion_type="None")
            self.audio_projection = nn.Sequential(nn.Linear(cfg["embed_dim"], 512), nn.ReLU(), nn.Linear(512, 512))

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.audio_projection(htsat_embedding(self.audio_branch, waveform)), dim=-1)

    with contextlib.nullcontext() if initialise else _random_init_skipped(htsat):
        return ClapAudioTower().eval()


def htsat_embedding(branch, waveform):
    """HTSAT's clip ``embedding`` ``[shape=(batch, 768)]`` of ``waveform`` ``[shape=(batch, 480000)]``, as
    ``HTSAT_Swin_Transformer.forward`` computes it for non-fusion inference, with laion-clap's modules and weights
    but a leaner path through them (each step is the same arithmetic; the parity test bounds the difference):

    - the frame-wise and class heads (``tscam_conv``, interpolations), whose outputs CLAP never uses, are skipped,
      and so are the per-layer attention maps ``BasicLayer`` stacks and averages in eval mode;
    - the STFT runs as an FFT with the window read from the checkpoint's DFT kernel, not as a 1024-tap
      convolution (15% of the model's FLOPs);
    - a Swin block's cyclic shift and window partition are one gather (and one back), not two copies each way,
      and its window attention is one fused ``scaled_dot_product_attention``;
    - on the CPU, linear layers run through oneDNN, the MLP's first fused with its GELU and the second with the
      residual sum, which saves two passes over the largest activations.
    """
    import torch

    # The front end stays in float32 under autocast: a loud clip's STFT power exceeds float16's range (65,504),
    # which turned whole embeddings into NaN with AMP on an H100.
    with torch.autocast(device_type=waveform.device.type, enabled=False):
        x = stft_power(branch.spectrogram_extractor.stft, waveform.float())
        x = branch.logmel_extractor(x)
        x = branch.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = branch.reshape_wav2img(x)
    frames_num = x.shape[2]
    x = branch.patch_embed(x, longer_idx=None)
    if branch.ape:
        x = x + branch.absolute_pos_embed
    for layer in branch.layers:
        for block in layer.blocks:
            x = swin_block(block, x)
        if layer.downsample is not None:
            x = layer.downsample(x)
    x = branch.norm(x)
    batch, _, channels = x.shape
    sf = frames_num // (2 ** (len(branch.depths) - 1)) // branch.patch_stride[0]
    st = frames_num // (2 ** (len(branch.depths) - 1)) // branch.patch_stride[1]
    x = x.permute(0, 2, 1).contiguous().reshape(batch, channels, sf, st)
    c_freq_bin = sf // branch.freq_ratio
    x = x.reshape(batch, channels, sf // c_freq_bin, c_freq_bin, st)
    x = x.permute(0, 1, 3, 2, 4).contiguous().reshape(batch, channels, c_freq_bin, -1)
    return torch.flatten(branch.avgpool(torch.flatten(x, 2)), 1)


def stft_power(stft, waveform):
    """torchlibrosa's ``Spectrogram`` output ``[shape=(batch, 1, frames, n_fft // 2 + 1)]`` (power, centred,
    reflect-padded) computed with an FFT. ``stft`` is the model's ``STFT`` module: its kernel's DC row is the
    analysis window itself (``window * cos(0)``), so the checkpoint's window is used, whatever it holds."""
    import torch

    window = stft.conv_real.weight[0, 0]
    spec = torch.stft(waveform, window.shape[0], hop_length=stft.conv_real.stride[0], window=window,
                      center=stft.center, pad_mode=stft.pad_mode, return_complex=True)
    return (spec.real ** 2 + spec.imag ** 2).transpose(1, 2).unsqueeze(1)


@functools.lru_cache(maxsize=None)
def window_order(height: int, width: int, window: int, shift: int, device: str):
    """``(gather, scatter)`` token indices ``[shape=(height * width,)]``: ``x[:, gather]`` lists the tokens
    window by window after a cyclic shift by ``-shift`` (Swin's ``roll`` + ``window_partition``), and
    ``y[:, scatter]`` puts them back (``window_reverse`` + the reverse ``roll``)."""
    import torch

    index = torch.arange(height * width).view(height, width)
    if shift:
        index = torch.roll(index, (-shift, -shift), (0, 1))
    gather = index.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1)
    scatter = torch.empty_like(gather)
    scatter[gather] = torch.arange(height * width)
    return gather.to(device), scatter.to(device)


def _onednn(x) -> bool:
    """True where oneDNN's fused linear kernels serve ``x``: float32 on the CPU of a build with oneDNN, without
    autograd (the fused kernels have no backward)."""
    import torch

    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled() \
        and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(layer, x):
    """``layer(x)`` for an ``nn.Linear``; on the CPU through oneDNN, which adds the bias inside the matrix
    product (measured 3-5% of the whole forward pass faster than ``addmm`` for HTSAT's shapes)."""
    import torch

    if _onednn(x):
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def mlp_residual(mlp, x, residual):
    """``residual + mlp(x)`` for laion-clap's ``Mlp`` (fc1, exact GELU, fc2); on the CPU the GELU is fused into
    fc1 and the sum into fc2 (oneDNN), sparing two passes over the largest activations."""
    import torch

    if _onednn(x) and isinstance(mlp.act, torch.nn.GELU) and mlp.act.approximate == "none":
        hidden = torch.ops.mkldnn._linear_pointwise(x, mlp.fc1.weight, mlp.fc1.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise.binary(hidden, residual, mlp.fc2.weight, mlp.fc2.bias, "add")
    return residual + mlp(x)


def swin_block(block, x):
    """laion-clap's ``SwinTransformerBlock.forward`` in eval mode ``[shape=(batch, tokens, channels)]``,
    without returning the attention map."""
    height, width = block.input_resolution
    batch, tokens, channels = x.shape
    gather, scatter = window_order(height, width, block.window_size, block.shift_size, str(x.device))
    windows = block.norm1(x).index_select(1, gather).view(-1, block.window_size ** 2, channels)
    attended = window_attention(block.attn, windows, block.attn_mask)
    x = x + attended.view(batch, tokens, channels).index_select(1, scatter)
    return mlp_residual(block.mlp, block.norm2(x), x)


def window_attention(attn, x, mask):
    """laion-clap's ``WindowAttention.forward`` ``[shape=(windows * batch, window tokens, channels)]`` as one
    fused ``scaled_dot_product_attention`` (on the CPU a flash kernel: about a third of the time of laion's
    matmul, bias, softmax, matmul here), with the relative position bias and the shift mask as its additive mask.
    """
    import torch

    windows, tokens, channels = x.shape
    heads = attn.num_heads
    qkv = linear(attn.qkv, x).reshape(windows, tokens, 3, heads, channels // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (windows, heads, tokens, head channels)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    bias = bias.view(tokens, tokens, heads).permute(2, 0, 1)  # heads, tokens, tokens
    if mask is not None:  # mask: (windows per image, tokens, tokens) of 0 / -100; windows are image-major
        per_image = mask.shape[0]
        bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, per_image * heads, tokens, tokens)
        q, k, v = (t.reshape(windows // per_image, per_image * heads, tokens, -1) for t in (q, k, v))
    else:
        bias = bias.unsqueeze(0)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=attn.scale)
    out = out.reshape(windows, heads, tokens, -1).transpose(1, 2).reshape(windows, tokens, channels)
    return linear(attn.proj, out)


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
    from ..store import atomic_write_text

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


@dataclass(frozen=True)
class LoadedModel:
    """A ready audio tower, and what manifests record about its weights."""

    model: object
    model_name: str
    weights: str  # "laion:<sha256>" or "random(seed=0)"
    device: str


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


def resolve_weights(checkpoint: str, *, allow_random_weights: bool, model_name: str,
                    cache_dir: str | os.PathLike, remember_digest: bool = True) -> tuple[str | None, str]:
    """``(checkpoint path or None, weights identity)`` for the config's ``clap.checkpoint``.

    The identity (``laion:sha256:<hex>`` or ``random(seed=0)``) goes into manifests and artifact keys. With
    ``remember_digest`` (``cache.enabled``), the digest is kept under ``cache_dir/checkpoints`` by the file's stat.
    """
    if checkpoint == "auto":  # the download's digest, checked on the way: no second hash
        path, digest = fetch_published_checkpoint(model_name, cache_dir)
        return str(path), f"laion:sha256:{digest}"
    if not checkpoint:
        if not allow_random_weights:
            raise CheckpointError("no CLAP weights: set clap.checkpoint to a LAION checkpoint file (or 'auto'), "
                                  "or clap.allow_random_weights: true for a seeded random model")
        return None, f"random(seed={RANDOM_WEIGHTS_SEED})"
    if not os.path.exists(checkpoint):
        raise CheckpointError(f"clap.checkpoint {checkpoint!r} does not exist")
    index_dir = Path(cache_dir) / "checkpoints" if remember_digest else None
    return checkpoint, f"laion:sha256:{checkpoint_sha256(checkpoint, index_dir)}"


def known_weights(checkpoint: str, *, allow_random_weights: bool, model_name: str,
                  cache_dir: str | os.PathLike) -> str | None:
    """The weights identity :func:`resolve_weights` gives for these settings when it is known without hashing or
    downloading a checkpoint (a digest remembered under ``cache_dir``), else None."""
    if not checkpoint:
        return f"random(seed={RANDOM_WEIGHTS_SEED})" if allow_random_weights else None
    index_dir = Path(cache_dir) / "checkpoints"
    if checkpoint == "auto" and model_name not in PUBLISHED_CHECKPOINTS:
        return None
    path = index_dir / PUBLISHED_CHECKPOINTS[model_name][1] if checkpoint == "auto" else Path(checkpoint)
    if not path.exists():
        return None
    digest = checkpoint_sha256(path, index_dir, remembered_only=True)
    return f"laion:sha256:{digest}" if digest else None


_models: dict[tuple, LoadedModel] = {}
_models_lock = threading.Lock()


def get_model(model_name: str, checkpoint_path: str | None, weights: str, *, device: str,
              warm_up: bool = True) -> LoadedModel:
    """The process's one model for these settings: built, loaded, moved (and on CUDA warmed up) on first request.

    ``checkpoint_path`` and ``weights`` come from :func:`resolve_weights` (None means the seeded random model).
    Thread-safe: concurrent callers wait for the first and get the same object.
    """
    import torch

    key = (model_name, checkpoint_path, device)
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
        # Warm-up pays on CUDA (library handles, the allocator's first blocks). On the CPU it does not: a first
        # pass took 0.19 s there against 0.17 s for the next, and the warm-up pass itself 0.2 s.
        if warm_up and resolved.startswith("cuda"):
            with torch.inference_mode():
                model(torch.zeros(1, MODEL_INPUT_SAMPLES, device=resolved))
        loaded = _models[key] = LoadedModel(model, model_name, weights, resolved)
        logger.info("CLAP %s (%s) ready on %s in %.2f s", model_name, weights, resolved,
                    time.perf_counter() - started)
        return loaded
