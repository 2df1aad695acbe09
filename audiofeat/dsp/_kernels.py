"""numba kernels of the feature core, each next to the plain-numpy reference the tests hold it to.

Kernels are small, ``nopython``, ``cache=True`` (compiled once per machine, then loaded from numba's cache) and
``nogil=True`` (threads processing different files run in parallel).
"""
from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nopython=True, cache=True, nogil=True, fastmath=False)


@numba.jit(**_JIT)
def _frame_block(y_padded, first_frame, n_frames, hop_length, window, out):
    """Copy ``n_frames`` windowed frames starting at frame ``first_frame`` into ``out[:n_frames]``."""
    n_fft = window.shape[0]
    for i in range(n_frames):
        start = (first_frame + i) * hop_length
        for j in range(n_fft):
            out[i, j] = y_padded[start + j] * window[j]


def _frame_block_ref(y_padded, first_frame, n_frames, hop_length, window):
    n_fft = window.shape[0]
    idx = (first_frame + np.arange(n_frames))[:, None] * hop_length + np.arange(n_fft)[None, :]
    return y_padded[idx] * window[None, :]


@numba.jit(**_JIT)
def _power_block(spectrum, n_frames, power, out, first_col):
    """``out[:, first_col + i] = |spectrum[i]| ** power`` for ``n_frames`` rows of an rfft block."""
    n_bins = spectrum.shape[1]
    for i in range(n_frames):
        for k in range(n_bins):
            re = spectrum[i, k].real
            im = spectrum[i, k].imag
            p = re * re + im * im
            if power != 2.0:
                p = p ** (0.5 * power)
            out[k, first_col + i] = p


def _power_block_ref(spectrum, power):
    return (np.abs(spectrum) ** power).T


@numba.jit(**_JIT)
def _power_mel_block(spectrum, n_frames, power, fb_weights, fb_lo, fb_hi, scratch, out, first_col):
    """Power spectrum of each rfft row, then the sparse mel filterbank, into ``out[:, first_col + i]``.

    ``fb_weights[m, k]`` is non-zero only for ``fb_lo[m] <= k < fb_hi[m]``; only that band is summed, so the
    mel stage costs about two multiply-adds per FFT bin instead of ``n_mels``.
    """
    n_bins = spectrum.shape[1]
    n_mels = fb_weights.shape[0]
    for i in range(n_frames):
        for k in range(n_bins):
            re = spectrum[i, k].real
            im = spectrum[i, k].imag
            p = re * re + im * im
            if power != 2.0:
                p = p ** (0.5 * power)
            scratch[k] = p
        for m in range(n_mels):
            acc = 0.0  # float64 accumulator: the filterbank sum matches a float64 matmul
            for k in range(fb_lo[m], fb_hi[m]):
                acc += fb_weights[m, k] * scratch[k]
            out[m, first_col + i] = acc


def _power_mel_block_ref(spectrum, power, fb_weights):
    return fb_weights @ (np.abs(spectrum.astype(np.complex128)) ** power).T


@numba.jit(**_JIT)
def _power_to_db_inplace(S, ref_db, amin, top_db):
    """``10 log10(max(S, amin)) - ref_db``, clipped at ``max - top_db`` when ``top_db >= 0``; in place."""
    n_rows, n_cols = S.shape
    peak = -np.inf
    for r in range(n_rows):
        for c in range(n_cols):
            v = S[r, c]
            if v < amin:
                v = amin
            d = 10.0 * np.log10(v) - ref_db
            S[r, c] = d
            if d > peak:
                peak = d
    if top_db >= 0.0:
        floor = peak - top_db
        for r in range(n_rows):
            for c in range(n_cols):
                if S[r, c] < floor:
                    S[r, c] = floor


def _power_to_db_ref(S, ref_db, amin, top_db):
    log_spec = 10.0 * np.log10(np.maximum(amin, S)) - ref_db
    if top_db is not None and top_db >= 0:
        log_spec = np.maximum(log_spec, log_spec.max() - top_db)
    return log_spec


@numba.jit(**_JIT)
def _row_stats(X, quantiles, out):
    """Per-row mean, std (population), min, max and the given quantiles of ``X`` [shape=(rows, t)].

    ``out`` [shape=(rows, 4 + len(quantiles))]. Quantiles interpolate linearly, as ``np.percentile``'s default.
    """
    n_rows, n = X.shape
    buf = np.empty(n, dtype=np.float64)
    for r in range(n_rows):
        total = 0.0
        lo = np.inf
        hi = -np.inf
        for c in range(n):
            v = X[r, c]
            buf[c] = v
            total += v
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        mean = total / n
        var = 0.0
        for c in range(n):
            d = buf[c] - mean
            var += d * d
        out[r, 0] = mean
        out[r, 1] = np.sqrt(var / n)
        out[r, 2] = lo
        out[r, 3] = hi
        buf.sort()
        for q in range(quantiles.shape[0]):
            pos = quantiles[q] * (n - 1)
            below = int(np.floor(pos))
            above = min(below + 1, n - 1)
            frac = pos - below
            out[r, 4 + q] = buf[below] + (buf[above] - buf[below]) * frac


def _row_stats_ref(X, quantiles):
    X = X.astype(np.float64)
    cols = [X.mean(axis=1), X.std(axis=1), X.min(axis=1), X.max(axis=1)]
    cols += [np.percentile(X, 100 * q, axis=1) for q in quantiles]
    return np.stack(cols, axis=1)
