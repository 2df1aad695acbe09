"""numba kernels of the spectral descriptors, each next to the plain-numpy reference the tests hold it to.

The spectral ones read a block of frames bins-major (``[shape=(n_bins, block)]``, as
:func:`._kernels._power_transposed` writes it), so that their inner loops run over contiguous frames; each writes
its rows of ``out`` [shape=(rows, span_frames)] at columns ``col:col + n_frames``.
"""
from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nopython=True, cache=True, nogil=True, fastmath=False)


@numba.jit(**_JIT)
def _shape_descriptors(mag_t, n_frames, freqs, roll_percent, out, col):
    """Rows 0-2 of ``out``: spectral centroid, bandwidth (p = 2) and rolloff (the lowest bin frequency whose
    float32 running sum reaches ``roll_percent`` of the frame's), in Hz, of magnitudes ``mag_t``
    [shape=(n_bins, block)]; a silent frame reads 0 for each, as librosa's."""
    n_bins = mag_t.shape[0]
    total = np.zeros(n_frames)
    moment = np.zeros(n_frames)
    running = np.zeros(n_frames, dtype=np.float32)
    for k in range(n_bins):
        for i in range(n_frames):
            total[i] += mag_t[k, i]
            moment[i] += freqs[k] * mag_t[k, i]
            running[i] += mag_t[k, i]
    threshold = running * np.float32(roll_percent)
    spread = np.zeros(n_frames)
    rolloff = np.full(n_frames, -1.0)
    running[:] = 0.0
    for k in range(n_bins):
        for i in range(n_frames):
            centroid = moment[i] / total[i] if total[i] > 0 else 0.0
            d = freqs[k] - centroid
            spread[i] += mag_t[k, i] * d * d
            running[i] += mag_t[k, i]
            if rolloff[i] < 0 and running[i] >= threshold[i]:
                rolloff[i] = freqs[k]
    for i in range(n_frames):
        scale = total[i] if total[i] > 0 else 1.0  # librosa leaves a silent frame unnormalised
        out[0, col + i] = moment[i] / scale
        out[1, col + i] = np.sqrt(spread[i] / scale)
        out[2, col + i] = rolloff[i]


def _shape_descriptors_ref(mag, freqs, roll_percent):
    """``(centroid, bandwidth, rolloff)`` of ``mag`` [shape=(n_bins, t)], each [shape=(t,)]."""
    mag = mag.astype(np.float64)
    total = mag.sum(axis=0)
    norm = mag / np.where(total > 0, total, 1.0)
    centroid = freqs @ norm
    bandwidth = np.sqrt(np.sum(norm * (freqs[:, None] - centroid) ** 2, axis=0))
    running = np.cumsum(mag.astype(np.float32), axis=0)
    reached = running >= running[-1] * np.float32(roll_percent)
    rolloff = freqs[np.argmax(reached, axis=0)]
    return centroid, bandwidth, rolloff


@numba.jit(**_JIT)
def _flatness(floored_t, logs_t, n_frames, out, row, col):
    """Row ``row`` of ``out``: spectral flatness, the geometric over the arithmetic mean of each frame's power
    floored at 1e-10 (``floored_t`` [shape=(n_bins, block)]), given its logarithms ``logs_t`` (numpy's SIMD
    float32 log, as librosa's own; numba's scalar one is several times slower)."""
    n_bins = floored_t.shape[0]
    logs = np.zeros(n_frames)
    sums = np.zeros(n_frames)
    for k in range(n_bins):
        for i in range(n_frames):
            logs[i] += logs_t[k, i]
            sums[i] += floored_t[k, i]
    for i in range(n_frames):
        out[row, col + i] = np.exp(logs[i] / n_bins) / (sums[i] / n_bins)


def _flatness_ref(power):
    power = np.maximum(1e-10, power.astype(np.float64))
    return np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)


@numba.jit(nopython=True, cache=True, nogil=True, fastmath=True)
def _chroma_from_power(n_frames, fb, power_t, acc, out, row, col):
    """Rows ``row .. row + n_chroma`` of ``out``: ``fb @ power_t`` [shape=(n_chroma, n_frames)], each frame
    divided by its largest value (a frame whose largest is below float32's smallest normal is left as it is,
    as librosa's ``normalize``); float32 sums in bin order, so a frame's values never depend on its block."""
    tiny = np.finfo(np.float32).tiny
    for c in range(fb.shape[0]):
        for i in range(n_frames):
            acc[c, i] = 0.0
        for k in range(fb.shape[1]):
            weight = fb[c, k]
            for i in range(n_frames):
                acc[c, i] += weight * power_t[k, i]
    for i in range(n_frames):
        peak = acc[0, i]
        for c in range(1, fb.shape[0]):
            peak = max(peak, acc[c, i])
        scale = peak if peak >= tiny else np.float32(1.0)
        for c in range(fb.shape[0]):
            out[row + c, col + i] = acc[c, i] / scale


def _chroma_from_power_ref(fb, power):
    chroma = fb.astype(np.float64) @ power
    peak = chroma.max(axis=0)
    return chroma / np.where(peak < np.finfo(np.float32).tiny, 1.0, peak)


@numba.jit(**_JIT)
def _keep_extreme(kept, count, take, value, sign):
    """Insert ``value`` into ``kept[:count]``, ordered so that ``sign * kept`` ascends, keeping at most ``take``;
    returns the new count."""
    if count == take:
        if sign * value >= sign * kept[take - 1]:
            return count
        count -= 1
    at = count
    while at > 0 and sign * kept[at - 1] > sign * value:
        kept[at] = kept[at - 1]
        at -= 1
    kept[at] = value
    return count + 1


@numba.jit(**_JIT)
def _contrast_bands(mag_t, n_frames, band_lo, band_hi, band_take, out, peak_row, valley_row, col):
    """Rows ``peak_row + b`` and ``valley_row + b`` of ``out``: the mean of the ``band_take[b]`` largest and of
    the ``band_take[b]`` smallest magnitudes of bins ``band_lo[b] <= k < band_hi[b]``, in dB (``10 log10``,
    at least 1e-10, as librosa's ``power_to_db`` of them; the ``top_db`` floor is the caller's).

    One pass per band keeps the extremes in two short ordered lists (a few percent of the band): most values
    are rejected by one comparison, which beats selecting in a copy."""
    lows = np.empty(band_take.max(), dtype=mag_t.dtype)
    highs = np.empty_like(lows)
    for b in range(band_lo.shape[0]):
        take = band_take[b]
        for i in range(n_frames):
            n_low = n_high = 0
            for k in range(band_lo[b], band_hi[b]):
                n_low = _keep_extreme(lows, n_low, take, mag_t[k, i], 1.0)
                n_high = _keep_extreme(highs, n_high, take, mag_t[k, i], -1.0)
            low = 0.0
            high = 0.0
            for k in range(take):
                low += lows[k]
                high += highs[k]
            out[peak_row + b, col + i] = 10.0 * np.log10(max(high / take, 1e-10))
            out[valley_row + b, col + i] = 10.0 * np.log10(max(low / take, 1e-10))


def _contrast_bands_ref(mag, band_lo, band_hi, band_take):
    """``(peak_db, valley_db)`` [shape=(bands, t)] by a full sort of each band."""
    peaks, valleys = [], []
    for lo, hi, take in zip(band_lo, band_hi, band_take):
        ordered = np.sort(mag[lo:hi].astype(np.float64), axis=0)
        valleys.append(ordered[:take].mean(axis=0))
        peaks.append(ordered[-take:].mean(axis=0))
    return 10 * np.log10(np.maximum(1e-10, peaks)), 10 * np.log10(np.maximum(1e-10, valleys))


@numba.jit(**_JIT)
def _rms_zcr(samples, lo, n, edges, first_frame, n_frames, hop_length, frame_length, out, rms_row, zcr_row, col):
    """Rows ``rms_row`` and ``zcr_row`` of ``out``: root mean square (zeros outside the signal) and
    zero-crossing rate (the signal's ``edges`` = first and last sample repeated outside it; ``|x| <= 1e-10``
    counts as zero, a crossing is a change of sign bit) of each centred frame of ``frame_length`` samples.

    ``samples`` hold the signal's samples from index ``lo``: every sample of these frames inside the signal.
    """
    half = frame_length // 2
    for f in range(n_frames):
        start = (first_frame + f) * hop_length - half
        squares = 0.0
        crossings = 0
        previous = False
        for j in range(frame_length):
            t = start + j
            if t < 0:
                value = edges[0]
            elif t >= n:
                value = edges[1]
            else:
                value = samples[t - lo]
                squares += np.float64(value) * value
            negative = value < 0 and abs(value) > 1e-10
            if j > 0 and negative != previous:
                crossings += 1
            previous = negative
        out[rms_row, col + f] = np.sqrt(squares / frame_length)
        out[zcr_row, col + f] = crossings / frame_length


def _rms_zcr_ref(y, frame_length, hop_length):
    """``(rms, zcr)`` [shape=(t,)] of centred frames of the whole signal ``y``."""
    half = frame_length // 2
    zero_padded = np.pad(y.astype(np.float64), half)
    edge_padded = np.pad(y, half, mode="edge")
    count = 1 + (len(zero_padded) - frame_length) // hop_length
    idx = np.arange(count)[:, None] * hop_length + np.arange(frame_length)[None, :]
    rms = np.sqrt(np.mean(zero_padded[idx] ** 2, axis=1))
    frames = edge_padded[idx]
    negative = np.signbit(np.where(np.abs(frames) <= 1e-10, 0.0, frames))
    zcr = np.sum(negative[:, 1:] != negative[:, :-1], axis=1) / frame_length
    return rms, zcr


@numba.jit(**_JIT)
def _onset_flux(log_mel, previous, out):
    """``out[j]`` = the mean over bands of ``max(0, log_mel[m, j] - log_mel[m, j - 1])`` [shape=(t,)], frame
    ``-1`` being ``previous`` [shape=(n_mels,)] (float32 sums in band order, as numpy's mean over bands)."""
    n_mels, t = log_mel.shape
    for j in range(t):
        acc = np.float32(0.0)
        for m in range(n_mels):
            before = previous[m] if j == 0 else log_mel[m, j - 1]
            acc += max(np.float32(0.0), log_mel[m, j] - before)
        out[j] = acc / np.float32(n_mels)


def _onset_flux_ref(log_mel, previous):
    both = np.concatenate([previous[:, None], log_mel], axis=1).astype(np.float64)
    return np.maximum(0.0, np.diff(both, axis=1)).mean(axis=0)


@numba.jit(**_JIT)
def _windowed_frames(padded, first, n_frames, window, frames):
    """``frames[i, :w] = padded[first + i:first + i + w] * window`` (``w = len(window)``) for ``i < n_frames``."""
    w = window.shape[0]
    for i in range(n_frames):
        segment = padded[first + i:first + i + w]
        row = frames[i]
        for k in range(w):
            row[k] = segment[k] * window[k]


def _windowed_frames_ref(padded, first, n_frames, window):
    w = window.shape[0]
    return np.lib.stride_tricks.sliding_window_view(padded, w)[first:first + n_frames] * window


@numba.jit(**_JIT)
def _power_rows(spectrum, n_frames, power):
    """``power[i] = |spectrum[i]| ** 2`` (complex ``power``: an inverse rfft's input) for ``i < n_frames``."""
    for i in range(n_frames):
        for k in range(spectrum.shape[1]):
            value = spectrum[i, k]
            power[i, k] = value.real * value.real + value.imag * value.imag  # the imaginary part zero


@numba.jit(**_JIT)
def _add_normalized(lags, n_frames, win_length, scale, total):
    """``total += lags[i, :win_length] / max |lags[i, :win_length]|`` for ``i < n_frames`` (a row whose maximum,
    times ``scale``, is below the smallest normal float64 is added as it is times ``scale``, as librosa's
    ``normalize`` leaves it)."""
    tiny = np.finfo(np.float64).tiny
    for i in range(n_frames):
        peak = 0.0
        for k in range(win_length):
            peak = max(peak, abs(lags[i, k]))
        divide = peak if peak * scale >= tiny else 1.0 / scale
        for k in range(win_length):
            total[k] += lags[i, k] / divide


def _add_normalized_ref(lags, n_frames, win_length, scale):
    rows = lags[:n_frames, :win_length] * scale
    peak = np.abs(rows).max(axis=1, keepdims=True)
    return (rows / np.where(peak < np.finfo(np.float64).tiny, 1.0, peak)).sum(axis=0)
