"""numba kernels of the feature core, each next to the plain-numpy reference the tests hold it to.

Kernels are small, ``nopython``, ``cache=True`` (compiled once per machine, then loaded from numba's cache) and
``nogil=True`` (threads processing different files run in parallel).
"""
from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nopython=True, cache=True, nogil=True, fastmath=False)


@numba.jit(nopython=True, cache=True, nogil=True, fastmath=True)
def _frame_block(y, offset, first_frame, n_frames, hop_length, window, out):
    """Copy ``n_frames`` windowed frames starting at frame ``first_frame`` into ``out[:n_frames]``.

    Frame ``f`` covers ``y[f * hop_length - offset:][:n_fft]``; samples outside ``y`` read as zero, which is
    centring with ``pad_mode='constant'`` (``offset = n_fft // 2``) without copying the signal.
    """
    n_fft = window.shape[0]
    n = y.shape[0]
    for i in range(n_frames):
        start = (first_frame + i) * hop_length - offset
        row = out[i]
        if start >= 0 and start + n_fft <= n:
            # Row and segment views let LLVM see two non-overlapping unit-stride arrays and vectorise.
            segment = y[start:start + n_fft]
            for j in range(n_fft):
                row[j] = segment[j] * window[j]
        else:
            for j in range(n_fft):
                t = start + j
                row[j] = y[t] * window[j] if 0 <= t < n else 0.0


def _frame_block_ref(y, offset, first_frame, n_frames, hop_length, window):
    n_fft = window.shape[0]
    padded = np.pad(y, (offset, n_fft))
    idx = (first_frame + np.arange(n_frames))[:, None] * hop_length + np.arange(n_fft)[None, :]
    return padded[idx] * window[None, :]


@numba.jit(nopython=True, cache=True, nogil=True, fastmath=True)
def _power_transposed(spectrum, n_frames, power, power_t):
    """``power_t[k, i] = |spectrum[i, k]| ** power`` [shape=(n_bins, block)]: bins-major, so that the mel
    stage below runs its inner loop over contiguous frames."""
    flat = spectrum.view(np.float32)  # interleaved re, im
    n_bins = spectrum.shape[1]
    for i in range(n_frames):
        for k in range(n_bins):
            re = flat[i, 2 * k]
            im = flat[i, 2 * k + 1]
            power_t[k, i] = re * re + im * im
    if power != 2.0:
        half = 0.5 * power
        for k in range(n_bins):
            for i in range(n_frames):
                power_t[k, i] = power_t[k, i] ** half


def _power_transposed_ref(spectrum, power):
    return (np.abs(spectrum.astype(np.complex128)) ** power).T


@numba.jit(nopython=True, cache=True, nogil=True, fastmath=True)
def _mel_from_power(n_frames, fb_weights, fb_lo, fb_hi, power_t, acc, out, first_col):
    """``out[m, first_col:first_col + n_frames] = fb_weights[m] @ power_t[:, :n_frames]``, summing only the
    filter's non-zero band ``fb_lo[m] <= k < fb_hi[m]`` (about two multiply-adds per bin and frame, in SIMD
    lanes across frames; float32, as librosa's own float32 matmul)."""
    for m in range(fb_weights.shape[0]):
        for i in range(n_frames):
            acc[i] = 0.0
        for k in range(fb_lo[m], fb_hi[m]):
            weight = fb_weights[m, k]
            for i in range(n_frames):
                acc[i] += weight * power_t[k, i]
        for i in range(n_frames):
            out[m, first_col + i] = acc[i]


def _mel_from_power_ref(fb_weights, power_t):
    return fb_weights.astype(np.float64) @ power_t


def _power_to_db_inplace(S, ref_db, amin, top_db):
    """``10 log10(max(S, amin)) - ref_db``, floored at ``max - top_db`` when ``top_db >= 0``; in place.

    numpy, not numba: numpy's SIMD ``log10`` is about eight times faster than the scalar one numba emits.
    """
    np.maximum(S, amin, out=S)
    np.log10(S, out=S)
    S *= 10.0
    if ref_db:
        S -= ref_db
    if top_db >= 0.0 and S.size:
        np.maximum(S, S.max() - top_db, out=S)


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
def _moments(row):
    """``(mean, population std, min, max, count of values equal to the min)`` of a 1-D ``row``."""
    n = row.shape[0]
    total = 0.0
    lo = np.inf
    hi = -np.inf
    for c in range(n):
        v = row[c]
        total += v
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    mean = total / n
    var = 0.0
    n_lo = 0  # values equal to the minimum (a log-mel's top_db floor): their ranks need no selection
    for c in range(n):
        d = row[c] - mean
        var += d * d
        if row[c] == lo:
            n_lo += 1
    return mean, np.sqrt(var / n), lo, hi, n_lo


@numba.jit(**_JIT)
def _rank_bins(row, lo, scale, n_lo, ranks, counts, first_rank, slot_of_bin, slot_start, rank_bin):
    """Histogram ``row`` (values above ``lo``) into :data:`_STATS_BINS` bins, find the bin of each rank and give
    each such bin a slot in the gather buffer; returns the number of slots."""
    counts[:] = 0
    for c in range(row.shape[0]):
        v = row[c]
        if v != lo:
            counts[min(int((v - lo) * scale), _STATS_BINS - 1)] += 1
    running = n_lo
    for b in range(_STATS_BINS):
        first_rank[b] = running
        running += counts[b]
    slot_of_bin[:] = -1
    n_slots = 0
    offset = 0
    b = 0
    for i in range(ranks.shape[0]):  # ranks ascend, so the bin search walks forward once
        if ranks[i] < n_lo:
            rank_bin[i] = -1
            continue
        while first_rank[b] + counts[b] <= ranks[i]:
            b += 1
        rank_bin[i] = b
        if slot_of_bin[b] < 0:
            slot_of_bin[b] = n_slots
            slot_start[n_slots] = offset
            offset += counts[b]
            n_slots += 1
    return n_slots


@numba.jit(**_JIT)
def _select_ranks(row, lo, scale, ranks, counts, first_rank, slot_of_bin, slot_start, rank_bin, gathered, values):
    """``values[i]`` = the ``ranks[i]``-th order statistic of ``row``: the needed bins' values gathered, then a
    quickselect inside each."""
    slot_fill = np.zeros(ranks.shape[0], dtype=np.int64)
    for c in range(row.shape[0]):
        v = row[c]
        if v != lo:
            s = slot_of_bin[min(int((v - lo) * scale), _STATS_BINS - 1)]
            if s >= 0:
                gathered[slot_start[s] + slot_fill[s]] = v
                slot_fill[s] += 1
    for i in range(ranks.shape[0]):
        b = rank_bin[i]
        if b < 0:
            values[i] = lo
            continue
        s = slot_of_bin[b]
        k = slot_start[s] + ranks[i] - first_rank[b]
        _select(gathered, slot_start[s], slot_start[s] + counts[b], k)
        values[i] = gathered[k]


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
    rank_bin = np.zeros(2 * n_q, dtype=np.int64)
    gathered = np.empty(n, dtype=X.dtype)
    values = np.empty(2 * n_q, dtype=np.float64)
    for r in range(n_rows):
        row = X[r]
        mean, std, lo, hi, n_lo = _moments(row)
        out[r, 0] = mean
        out[r, 1] = std
        out[r, 2] = lo
        out[r, 3] = hi
        if hi == lo:
            for q in range(n_q):
                out[r, 4 + q] = lo
            continue
        scale = _STATS_BINS / (hi - lo)
        if _rank_bins(row, lo, scale, n_lo, ranks, counts, first_rank, slot_of_bin, slot_start, rank_bin):
            _select_ranks(row, lo, scale, ranks, counts, first_rank, slot_of_bin, slot_start, rank_bin, gathered,
                          values)
        else:
            values[:] = lo
        for q in range(n_q):
            pos = quantiles[q] * (n - 1)
            frac = pos - np.floor(pos)
            out[r, 4 + q] = values[2 * q] + (values[2 * q + 1] - values[2 * q]) * frac


def _row_stats_ref(X, quantiles):
    X = X.astype(np.float64)
    cols = [X.mean(axis=1), X.std(axis=1), X.min(axis=1), X.max(axis=1)]
    cols += [np.percentile(X, 100 * q, axis=1) for q in quantiles]
    return np.stack(cols, axis=1)
