"""Spectral descriptors of a signal of any length, summarised like the log-mel: centroid, bandwidth, rolloff,
flatness, RMS, zero-crossing rate, contrast and chroma per frame, and the onset rate and tempo of the file.

One streamed STFT feeds every descriptor and the onset envelope's mel bands (librosa computes a spectrogram per
call). Per-frame values go to a :class:`.summary.FrameSpool` and are reduced a row at a time: memory follows a
span of frames, not the recording. Two librosa definitions need the whole file first: the ``top_db`` floors of
contrast and of the onset envelope's log-mel (relative to the file's maximum), applied as the spools are read
back; and onset picking and the tempogram, which read the onset envelope (4 bytes per frame) held whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spectrum import QUANTILES, STAT_NAMES, ParameterError, _check_audio, _sparse_filters, _stft_args
from .summary import FrameSpool

SHAPE_ROWS = ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "rms", "zcr")
_RMS, _ZCR, _PEAK = 4, 5, 6  # row indices in the frame spool: SHAPE_ROWS, peak dB per band, valley dB, chroma


@dataclass(frozen=True)
class Bands:
    """Spectral contrast's octave bands as bin ranges ``lo[b] <= k < hi[b]``, and how many of each band's
    smallest and largest magnitudes are averaged (``take[b]``), as ``librosa.feature.spectral_contrast``."""

    lo: np.ndarray
    hi: np.ndarray
    take: np.ndarray


def contrast_bands(*, sr: float, n_fft: int, fmin: float = 200.0, n_bands: int = 6, quantile: float = 0.02) -> Bands:
    """The ``n_bands + 1`` bands of librosa's spectral contrast: [0, fmin], then octaves up to ``fmin *
    2**n_bands``, the last one extended to the Nyquist frequency; each band but the first starts one bin low,
    each but the last drops its top bin."""
    edges = np.concatenate([[0.0], fmin * 2.0 ** np.arange(n_bands + 1)])
    if np.any(edges[:-1] >= 0.5 * sr):
        raise ParameterError(f"spectral contrast: band edge {edges[-2]:g} Hz is not below the Nyquist frequency")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, hi, take = [], [], []
    for k in range(n_bands + 1):
        inside = np.flatnonzero((freqs >= edges[k]) & (freqs <= edges[k + 1]))
        first = inside[0] - 1 if k > 0 else inside[0]
        last = len(freqs) if k == n_bands else inside[-1] + 1
        take.append(max(1, int(np.rint(quantile * (last - first)))))
        lo.append(first)
        hi.append(last if k == n_bands else last - 1)
    return Bands(*(np.asarray(v, dtype=np.int64) for v in (lo, hi, take)))


def spectral_summary(y, *, sr: float, n_fft: int = 2048, hop_length: int = 512, roll_percent: float = 0.85,
                     contrast_fmin: float = 200.0, contrast_n_bands: int = 6, contrast_quantile: float = 0.02,
                     n_chroma: int = 12, tuning: float = 0.0, n_mels: int = 128, top_db: float = 80.0,
                     ac_size: float = 8.0, start_bpm: float = 120.0) -> dict:
    """Spectral descriptors of mono ``y`` [shape=(n,)] (or a reader: ``frames`` and ``read(start, stop)``), with
    librosa's definitions and defaults: ``spectral_centroid``, ``spectral_bandwidth``, ``spectral_rolloff``,
    ``spectral_flatness``, ``rms``, ``zero_crossing_rate``, ``spectral_contrast`` and ``chroma_stft`` (at the
    given ``tuning``, in fractions of a bin; librosa estimates it from the file when not given) per frame of a
    centred Hann STFT; ``onset_detect`` and ``tempo`` of ``onset_strength``.

    Returns
    -------
    dict
        ``{row: {stat: value}}`` for each of :data:`SHAPE_ROWS` (Hz, ratios and amplitudes), ``{"contrast_db":
        {stat: [n_bands + 1 values]}, "chroma": {stat: [n_chroma values]}}`` (``stat`` in :data:`STAT_NAMES`),
        ``n_frames``, ``onsets`` (count), ``onset_rate_hz`` (per second of audio) and ``tempo_bpm`` (None when
        the onset envelope is zero everywhere: no tempo to find).
    """
    from .rhythm import onset_envelope, onset_frames, tempo

    if isinstance(y, np.ndarray) or not hasattr(y, "read"):
        y = _check_audio(y)
        if y.ndim != 1:
            raise ParameterError(f"spectral_summary takes mono audio of shape (n,), not {y.shape}")
    n = y.shape[0] if isinstance(y, np.ndarray) else y.frames
    read = (lambda start, stop: y[start:stop]) if isinstance(y, np.ndarray) else y.read
    bands = contrast_bands(sr=sr, n_fft=n_fft, fmin=contrast_fmin, n_bands=contrast_n_bands,
                           quantile=contrast_quantile)
    chroma_fb = _chroma_filters(sr, n_fft, n_chroma, tuning)
    rows = _PEAK + 2 * len(bands.lo) + n_chroma
    with FrameSpool(rows) as frames, FrameSpool(n_mels) as log_mel:
        maxima = _spool_frames(read, n, frames, log_mel, sr=sr, n_fft=n_fft, hop_length=hop_length,
                               roll_percent=roll_percent, bands=bands, chroma_fb=chroma_fb)
        summary = _frame_summaries(frames, len(bands.lo), maxima, top_db)
        envelope = onset_envelope(log_mel, floor=maxima["log_mel"] - top_db, delay=1 + n_fft // (2 * hop_length))
    onsets = onset_frames(envelope, sr=sr, hop_length=hop_length)
    summary.update(n_frames=int(envelope.shape[0]), onsets=int(onsets.shape[0]),
                   onset_rate_hz=onsets.shape[0] / (n / sr) if n else 0.0,
                   tempo_bpm=tempo(envelope, sr=sr, hop_length=hop_length, ac_size=ac_size, start_bpm=start_bpm))
    return summary


def _chroma_filters(sr, n_fft, n_chroma, tuning) -> np.ndarray:
    import librosa

    return np.ascontiguousarray(librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning),
                                dtype=np.float32)


def _spool_frames(read, n, frames: FrameSpool, log_mel: FrameSpool, *, sr, n_fft, hop_length, roll_percent,
                  bands: Bands, chroma_fb) -> dict:
    """Every frame's descriptors into ``frames`` (contrast's peaks and valleys in dB, unfloored) and its mel
    bands in dB into ``log_mel``; returns the maxima the ``top_db`` floors are relative to."""
    from ._descriptor_kernels import _rms_zcr
    from ._fft import BLOCK_FRAMES
    from ._kernels import _mel_from_power, _power_transposed
    from .spectrum import SPAN_FRAMES, _n_frames, _stft_span_blocks

    n_fft, hop_length, window = _stft_args(n_fft, hop_length, None, "hann")
    weights, mel_lo, mel_hi = _sparse_filters(float(sr), n_fft, log_mel.rows, 0.0, None, False, "slaney")
    edges = np.asarray([read(0, 1)[0], read(n - 1, n)[0]] if n else [0.0, 0.0], dtype=np.float32)
    total = _n_frames(n, n_fft // 2, n_fft, hop_length)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    power_t = np.empty((n_fft // 2 + 1, BLOCK_FRAMES), dtype=np.float32)
    mag_t, acc = np.empty_like(power_t), np.empty(BLOCK_FRAMES, dtype=np.float32)
    scratch = (np.empty_like(power_t), np.empty_like(power_t), np.empty((len(chroma_fb), BLOCK_FRAMES), np.float32))
    maxima = {"peak": -np.inf, "valley": -np.inf, "log_mel": -np.inf}
    span = mel = None
    for first, count, spectrum, samples, lo in _stft_span_blocks(read, n, n_fft // 2, n_fft, hop_length, window):
        col = first % SPAN_FRAMES
        if col == 0:
            _flush(span, mel, frames, log_mel, len(bands.lo), maxima)
            width = min(SPAN_FRAMES, total - first)
            span = np.empty((frames.rows, width), np.float32)
            mel = np.empty((log_mel.rows, width), np.float32)
        _power_transposed(spectrum, count, 2.0, power_t)
        _mel_from_power(count, weights, mel_lo, mel_hi, power_t, acc, mel, col)
        _block_descriptors(power_t, mag_t, scratch, count, span, col, freqs=freqs, roll_percent=roll_percent,
                           bands=bands, chroma_fb=chroma_fb)
        _rms_zcr(samples, lo, n, edges, first, count, hop_length, n_fft, span, _RMS, _ZCR, col)
    _flush(span, mel, frames, log_mel, len(bands.lo), maxima)
    return maxima


def _block_descriptors(power_t, mag_t, scratch, count, span, col, *, freqs, roll_percent, bands, chroma_fb):
    from ._descriptor_kernels import _chroma_from_power, _contrast_bands, _flatness, _shape_descriptors

    np.sqrt(power_t[:, :count], out=mag_t[:, :count])
    _shape_descriptors(mag_t, count, freqs, roll_percent, span, col)
    floored = np.maximum(power_t[:, :count], np.float32(1e-10), out=scratch[0][:, :count])
    _flatness(floored, np.log(floored, out=scratch[1][:, :count]), count, span, 3, col)
    n_bands = len(bands.lo)
    _contrast_bands(mag_t, count, bands.lo, bands.hi, bands.take, span, _PEAK, _PEAK + n_bands, col)
    _chroma_from_power(count, chroma_fb, power_t, scratch[2], span, _PEAK + 2 * n_bands, col)


def _flush(span, mel, frames: FrameSpool, log_mel: FrameSpool, n_bands: int, maxima: dict) -> None:
    """A finished span's rows and log-mel into their spools, its maxima into ``maxima``."""
    from ._kernels import _power_to_db_inplace

    if span is None:
        return
    _power_to_db_inplace(mel, 0.0, 1e-10, -1.0)
    for name, block in (("peak", span[_PEAK:_PEAK + n_bands]), ("valley", span[_PEAK + n_bands:_PEAK + 2 * n_bands]),
                        ("log_mel", mel)):
        if block.size:
            maxima[name] = max(maxima[name], float(block.max()))
    frames.append(span)
    log_mel.append(mel)


def _frame_summaries(frames: FrameSpool, n_bands: int, maxima: dict, top_db: float) -> dict:
    """:data:`STAT_NAMES` of each descriptor row: one value each for :data:`SHAPE_ROWS`, a list over the bands
    for ``contrast_db`` (peak minus valley in dB, each floored ``top_db`` below its own maximum) and over the
    pitch classes for ``chroma``. Rows are read back one at a time."""
    summary = {name: {stat: values[0] for stat, values in _stats([frames.row(index)], 1).items()}
               for index, name in enumerate(SHAPE_ROWS)}
    peak_floor, valley_floor = (np.float32(maxima[name] - top_db) for name in ("peak", "valley"))

    def contrast(band):
        peak = np.maximum(frames.row(_PEAK + band), peak_floor)
        return peak - np.maximum(frames.row(_PEAK + n_bands + band), valley_floor)

    summary["contrast_db"] = _stats(map(contrast, range(n_bands)), n_bands)
    chroma_rows = range(_PEAK + 2 * n_bands, frames.rows)
    summary["chroma"] = _stats(map(frames.row, chroma_rows), len(chroma_rows))
    return summary


def _stats(rows, count: int) -> dict:
    """``{stat: [value per row]}`` of ``count`` 1-D float32 ``rows`` (an iterable: each is reduced as it comes)."""
    from ._kernels import _row_stats

    quantiles = np.asarray(QUANTILES)
    stats = np.empty((count, 4 + len(QUANTILES)))
    for index, row in enumerate(rows):
        _row_stats(row[None, :], quantiles, stats[index:index + 1])
    return {name: stats[:, column].tolist() for column, name in enumerate(STAT_NAMES)}
