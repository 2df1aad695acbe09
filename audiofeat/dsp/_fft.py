"""pyFFTW float32 real-FFT plans over blocks of frames, built once per thread and reused; wisdom kept on disk."""
from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pyfftw

BLOCK_FRAMES = 64  # frames per FFT call: block, spectrum and transposed power (~1 MiB at n_fft 2048) stay in L2
_local = threading.local()
_wisdom_lock = threading.Lock()
_wisdom_loaded = False


def wisdom_path() -> Path:
    base = os.environ.get("AUDIOFEAT_FFTW_WISDOM") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "audiofeat", "fftw_wisdom.pkl")
    return Path(base)


def _load_wisdom() -> None:
    global _wisdom_loaded
    with _wisdom_lock:
        if _wisdom_loaded:
            return
        _wisdom_loaded = True
        try:
            with open(wisdom_path(), "rb") as handle:
                pyfftw.import_wisdom(pickle.load(handle))
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            pass


def _save_wisdom() -> None:
    from ..store.artifacts import atomic_write_bytes

    with _wisdom_lock:
        try:
            atomic_write_bytes(wisdom_path(), pickle.dumps(pyfftw.export_wisdom()))
        except OSError:
            pass  # wisdom only saves planning time; a read-only home must not fail a run


class RfftBlock:
    """Aligned input ``frames`` [shape=(BLOCK_FRAMES, n_fft)] float32 and its rfft ``spectrum``."""

    def __init__(self, n_fft: int) -> None:
        self.frames = pyfftw.empty_aligned((BLOCK_FRAMES, n_fft), dtype="float32")
        self.spectrum = pyfftw.empty_aligned((BLOCK_FRAMES, n_fft // 2 + 1), dtype="complex64")
        before = pyfftw.export_wisdom()
        self._plan = pyfftw.FFTW(self.frames, self.spectrum, axes=(1,), direction="FFTW_FORWARD",
                                 flags=("FFTW_MEASURE",), threads=1)
        if pyfftw.export_wisdom() != before:
            _save_wisdom()
        self.frames[:] = 0.0

    def execute(self) -> np.ndarray:
        self._plan()
        return self.spectrum


def _thread_plan(kind: type, size: int):
    """This thread's reusable ``kind(size)`` (plans and buffers are not shared between threads)."""
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    block = plans.get((kind, size))
    if block is None:
        _load_wisdom()
        block = plans[(kind, size)] = kind(size)
    return block


def rfft_block(n_fft: int) -> RfftBlock:
    """This thread's reusable :class:`RfftBlock` for ``n_fft``."""
    return _thread_plan(RfftBlock, n_fft)


class AutocorrelationBlock:
    """Aligned float64 ``frames`` [shape=(AUTOCORRELATION_FRAMES, 2 * win_length)] (zero past ``win_length``),
    their rfft ``spectrum``, the ``power`` spectra (complex, imaginary part zero) and their inverse rfft:
    ``2 * win_length`` times each frame's linear autocorrelation at lags ``0 .. win_length``."""

    def __init__(self, win_length: int) -> None:
        self.size = size = 2 * win_length
        self.frames = pyfftw.zeros_aligned((AUTOCORRELATION_FRAMES, size), dtype="float64")
        self.spectrum = pyfftw.empty_aligned((AUTOCORRELATION_FRAMES, size // 2 + 1), dtype="complex128")
        self.power = pyfftw.empty_aligned((AUTOCORRELATION_FRAMES, size // 2 + 1), dtype="complex128")
        self.lags = pyfftw.empty_aligned((AUTOCORRELATION_FRAMES, size), dtype="float64")
        before = pyfftw.export_wisdom()
        self._forward = pyfftw.FFTW(self.frames, self.spectrum, axes=(1,), flags=("FFTW_MEASURE",), threads=1)
        self._inverse = pyfftw.FFTW(self.power, self.lags, axes=(1,), direction="FFTW_BACKWARD",
                                    flags=("FFTW_MEASURE",), threads=1)
        self.frames[:] = 0.0  # FFTW_MEASURE overwrites its arrays while planning
        if pyfftw.export_wisdom() != before:
            _save_wisdom()

    def forward(self) -> np.ndarray:
        self._forward()
        return self.spectrum

    def inverse(self) -> np.ndarray:
        """The unnormalised inverse of ``power`` (which it overwrites)."""
        self._inverse(normalise_idft=False)
        return self.lags


AUTOCORRELATION_FRAMES = 1024


def autocorrelation_block(win_length: int) -> AutocorrelationBlock:
    """This thread's reusable :class:`AutocorrelationBlock` for ``win_length``."""
    return _thread_plan(AutocorrelationBlock, win_length)
