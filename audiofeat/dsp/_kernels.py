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


@numba.jit(nopython=True, cache=True, nogil=True, fastmath=True)
def _power_mel_block(spectrum, n_frames, power, fb_weights, fb_lo, fb_hi, scratch, out, first_col):
    """Power spectrum of each rfft row, then the sparse mel filterbank, into ``out[:, first_col + i]``.

    ``fb_weights[m, k]`` is non-zero only for ``fb_lo[m] <= k < fb_hi[m]``; only that band is summed, so the
    mel stage costs about two multiply-adds per FFT bin instead of ``n_mels``. ``fastmath`` lets LLVM reorder
    the band sums into SIMD lanes (a float64 accumulator keeps them within 1e-12 relative of a matmul).
    """
    n_bins = spectrum.shape[1]
    n_mels = fb_weights.shape[0]
    half_power = 0.5 * power
    for i in range(n_frames):
        for k in range(n_bins):
            re = spectrum[i, k].real
            im = spectrum[i, k].imag
            scratch[k] = re * re + im * im
        if power != 2.0:
            for k in range(n_bins):
                scratch[k] = scratch[k] ** half_power
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
def _select(buf, lo, hi, k):
    """Quickselect: reorder ``buf[lo:hi]`` so that ``buf[k]`` holds the value a full sort would put there.

    Three-way partition around a median-of-three pivot, so runs of equal values (the ``top_db`` floor of a
    log-mel) finish in one pass instead of degrading to ``n log n``.
    """
    while hi - lo > 1:
        a = buf[lo]
        b = buf[(lo + hi) // 2]
        c = buf[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        lt = lo  # buf[lo:lt] < pivot
        i = lo  # buf[lt:i] == pivot
        gt = hi  # buf[gt:hi] > pivot
        while i < gt:
            v = buf[i]
            if v < pivot:
                buf[i] = buf[lt]
                buf[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                gt -= 1
                buf[i] = buf[gt]
                buf[gt] = v
            else:
                i += 1
        if k < lt:
            hi = lt
        elif k >= gt:
            lo = gt
        else:
            return


_STATS_BINS = 1024


@numba.jit(**_JIT)
def _row_stats(X, quantiles, out):
    """Per-row mean, std (population), min, max and the given quantiles of ``X`` [shape=(rows, t)].

    ``out`` [shape=(rows, 4 + len(quantiles))]; ``quantiles`` ascending, in [0, 1]. Quantiles interpolate
    linearly between order statistics, as ``np.percentile``'s default. The order statistics are exact without
    a sort: a 1024-bin histogram over [min, max] finds the bin holding each needed rank, only those bins'
    values are gathered, and a quickselect inside each finishes the job (about four cheap passes per row).
    """
    n_rows, n = X.shape
    n_q = quantiles.shape[0]
    ranks = np.empty(2 * n_q, dtype=np.int64)
    for q in range(n_q):
        pos = quantiles[q] * (n - 1)
        below = int(np.floor(pos))
        ranks[2 * q] = below
        ranks[2 * q + 1] = min(below + 1, n - 1)
    counts = np.zeros(_STATS_BINS, dtype=np.int64)
    first_rank = np.zeros(_STATS_BINS, dtype=np.int64)
    slot_of_bin = np.full(_STATS_BINS, -1, dtype=np.int64)
    slot_start = np.zeros(2 * n_q, dtype=np.int64)
    slot_fill = np.zeros(2 * n_q, dtype=np.int64)
    rank_bin = np.zeros(2 * n_q, dtype=np.int64)
    gathered = np.empty(n, dtype=X.dtype)
    values = np.empty(2 * n_q, dtype=np.float64)
    for r in range(n_rows):
        total = 0.0
        lo = np.inf
        hi = -np.inf
        for c in range(n):
            v = X[r, c]
            total += v
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        mean = total / n
        var = 0.0
        for c in range(n):
            d = X[r, c] - mean
            var += d * d
        out[r, 0] = mean
        out[r, 1] = np.sqrt(var / n)
        out[r, 2] = lo
        out[r, 3] = hi
        if hi == lo:
            for q in range(n_q):
                out[r, 4 + q] = lo
            continue
        scale = _STATS_BINS / (hi - lo)
        counts[:] = 0
        for c in range(n):
            b = int((X[r, c] - lo) * scale)
            counts[min(b, _STATS_BINS - 1)] += 1
        running = 0
        for b in range(_STATS_BINS):
            first_rank[b] = running
            running += counts[b]
        slot_of_bin[:] = -1
        n_slots = 0
        offset = 0
        b = 0
        for i in range(2 * n_q):  # ranks ascend, so the bin search walks forward once
            while first_rank[b] + counts[b] <= ranks[i]:
                b += 1
            rank_bin[i] = b
            if slot_of_bin[b] < 0:
                slot_of_bin[b] = n_slots
                slot_start[n_slots] = offset
                slot_fill[n_slots] = 0
                offset += counts[b]
                n_slots += 1
        for c in range(n):
            v = X[r, c]
            b = min(int((v - lo) * scale), _STATS_BINS - 1)
            s = slot_of_bin[b]
            if s >= 0:
                gathered[slot_start[s] + slot_fill[s]] = v
                slot_fill[s] += 1
        for i in range(2 * n_q):
            b = rank_bin[i]
            s = slot_of_bin[b]
            k = slot_start[s] + ranks[i] - first_rank[b]
            _select(gathered, slot_start[s], slot_start[s] + counts[b], k)
            values[i] = gathered[k]
        for q in range(n_q):
            pos = quantiles[q] * (n - 1)
            frac = pos - np.floor(pos)
            out[r, 4 + q] = values[2 * q] + (values[2 * q + 1] - values[2 * q]) * frac


def _row_stats_ref(X, quantiles):
    X = X.astype(np.float64)
    cols = [X.mean(axis=1), X.std(axis=1), X.min(axis=1), X.max(axis=1)]
    cols += [np.percentile(X, 100 * q, axis=1) for q in quantiles]
    return np.stack(cols, axis=1)
