"""Speed-ups that reach into other projects' internals, all here, each with its reason, all behind one switch.

``AUDIOFEAT_SPEEDUPS=off`` (or ``0``/``false``) turns every one of them off: the code then takes the plain path
(public APIs, library defaults) and gives the same results; the test suite runs its parity and workflow tests
once that way. What each saves is measured in docs/benchmarks.md.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import threading
import types

SWITCH = "AUDIOFEAT_SPEEDUPS"


def enabled() -> bool:
    return os.environ.get(SWITCH, "on").strip().lower() not in ("0", "off", "false", "no")


# --- process start and end ----------------------------------------------------------------------------------
def cancel_wakeup_timers() -> int:
    """Cancel Snakemake's pending 1 s scheduler wake-up ``threading.Timer`` (a private of its job rate limiter),
    which the interpreter otherwise waits for at exit; returns how many were cancelled. Call from
    ``onsuccess``/``onerror``, when the scheduler has nothing left to wake."""
    if not enabled():
        return 0
    pending = [t for t in threading.enumerate()
               if isinstance(t, threading.Timer) and not t.finished.is_set()
               and getattr(t.function, "__module__", "") == "snakemake.scheduling.job_scheduler"]
    for timer in pending:
        timer.cancel()
    return len(pending)


def spare_exit_collection() -> None:
    """``gc.freeze()``: the cyclic collector (at exit above all) skips what the Snakemake process holds now, its
    imports included; objects are still freed by reference counting."""
    if enabled():
        gc.freeze()


def fast_exit() -> None:
    """End a rule script without the interpreter's teardown of torch's and numba's modules, once every output
    is written and closed (the store's writes are fsynced); with speed-ups off, a normal exit."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    if enabled():
        os._exit(0)
    sys.exit(0)


def retain_freed_memory() -> bool:
    """glibc ``mallopt``: keep freed memory for reuse (trim threshold 1 GiB, mmap threshold 32 MiB) instead of
    fresh pages for every CPU forward pass's activations. Process-wide; False where libc is not glibc."""
    if not enabled():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_trim_threshold, 1 << 30)) and bool(mallopt(m_mmap_threshold, 32 << 20))


# --- building the CLAP tower --------------------------------------------------------------------------------
def laion_utils_imports_skipped() -> tuple[str, ...]:
    """Top-level imports of laion's ``clap_module/utils.py`` left out when it is loaded: the two helpers htsat.py
    takes from it never use them, and torchvision alone imports torch._dynamo."""
    return ("torchvision", "h5py", "tqdm") if enabled() else ()


@contextlib.contextmanager
def torchlibrosa_constants():
    """While HTSAT is built, torchlibrosa's STFT window and mel filterbank (model parameters a checkpoint
    overwrites) come from :mod:`audiofeat.dsp` instead of librosa, whose first use imports scipy and numba."""
    if not enabled():
        yield
        return
    import numpy as np
    import torchlibrosa.stft as torchlibrosa_stft

    from . import dsp

    def get_window(window, win_length, fftbins=True):
        if not fftbins:
            raise ValueError("torchlibrosa asked for a symmetric window; audiofeat.dsp has periodic ones only")
        return dsp.get_window(window, win_length).astype(np.float64)

    def mel(sr, n_fft, n_mels, fmin, fmax):
        return dsp.mel_filters(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).copy()  # writable

    original = torchlibrosa_stft.librosa
    torchlibrosa_stft.librosa = types.SimpleNamespace(filters=types.SimpleNamespace(get_window=get_window, mel=mel),
                                                      util=types.SimpleNamespace(pad_center=dsp.pad_center))
    try:
        yield
    finally:
        torchlibrosa_stft.librosa = original


@contextlib.contextmanager
def random_init_skipped(htsat):
    """While a tower is built for a checkpoint that overwrites every parameter, torch.nn.init's random
    initialisers, laion's ``trunc_normal_`` and torchlibrosa's DFT matrix are patched to leave tensors as
    allocated (as transformers' ``no_init_weights`` does). Process-wide while it lasts: the model cache builds
    under its lock."""
    if not enabled():
        yield
        return
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


# --- the CLAP forward pass on the CPU -----------------------------------------------------------------------
def _onednn(x) -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` (a private oneDNN op: bias, GELU or a residual sum fused
    into the matrix product) serves ``x``: float32 on the CPU without autograd, in a build with oneDNN, and not
    while ``torch.compile`` traces (inductor fuses on its own, and cannot lower this op with module weights)."""
    import torch

    return enabled() and not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled() \
        and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(layer, x):
    """``layer(x)`` for an ``nn.Linear``; on the CPU through oneDNN, with the bias added inside the product."""
    import torch

    if _onednn(x):
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def mlp_residual(mlp, x, residual):
    """``residual + mlp(x)`` for laion-clap's ``Mlp`` (fc1, exact GELU, fc2); on the CPU the GELU is fused into
    fc1 and the sum into fc2, sparing two passes over the largest activations."""
    import torch

    if _onednn(x) and isinstance(mlp.act, torch.nn.GELU) and mlp.act.approximate == "none":
        hidden = torch.ops.mkldnn._linear_pointwise(x, mlp.fc1.weight, mlp.fc1.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise.binary(hidden, residual, mlp.fc2.weight, mlp.fc2.bias, "add")
    return residual + mlp(x)
