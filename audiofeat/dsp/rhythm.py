"""Onsets and tempo of a file, as librosa finds them, from its onset envelope: one float32 per frame (14 MB for
10 hours at hop 512 and 48 kHz), held whole because librosa's onset picking normalises it by its extremes.

The envelope is librosa's ``onset_strength`` (the mean over mel bands of the log-mel's rise from frame to frame)
made from a :class:`.summary.FrameSpool` of the log-mel; the tempo is librosa's ``tempo`` of the time-averaged
tempogram, accumulated a chunk of frames at a time instead of built whole (750 lags per frame).
"""
from __future__ import annotations

import numpy as np

from .summary import FrameSpool

ONSET_CHUNK_FRAMES = 4096  # log-mel frames read back at once


def onset_envelope(log_mel: FrameSpool, *, floor: float, delay: int) -> np.ndarray:
    """``librosa.onset.onset_strength`` [shape=(t,)] float32 of the log-mel in ``log_mel`` (dB, before its
    ``top_db`` floor, which is ``floor`` here): the flux of frame ``j`` lands at ``j - 1 + delay`` (``delay``:
    the lag plus the centring's ``n_fft // (2 * hop_length)`` frames), the first ``delay`` frames are zero."""
    from ._descriptor_kernels import _onset_flux

    envelope = np.zeros(log_mel.frames, dtype=np.float32)
    previous, at = None, 0
    for chunk in log_mel.chunks(ONSET_CHUNK_FRAMES):
        np.maximum(chunk, np.float32(floor), out=chunk)
        flux = np.empty(chunk.shape[1], dtype=np.float32)
        _onset_flux(chunk, chunk[:, 0] if previous is None else previous, flux)
        start = 1 if previous is None else 0  # the first frame has no frame before it
        lands = at + np.arange(start, chunk.shape[1]) - 1 + delay
        keep = lands < envelope.shape[0]
        envelope[lands[keep]] = flux[start:][keep]
        previous, at = chunk[:, -1].copy(), at + chunk.shape[1]
    return envelope


def onset_frames(envelope: np.ndarray, *, sr: float, hop_length: int) -> np.ndarray:
    """Frames of ``librosa.onset.onset_detect`` on ``envelope`` (its defaults: normalised, peak-picked)."""
    import librosa

    return librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=hop_length)


def tempogram_mean(envelope: np.ndarray, *, win_length: int) -> np.ndarray:
    """``librosa.feature.tempogram(onset_envelope=envelope, win_length=win_length).mean(axis=1)`` [shape=
    (win_length,)]: each frame's Hann-windowed autocorrelation over ``win_length`` frames around it (the envelope
    ramped to zero beyond its ends), normalised by its largest value, averaged over frames; a block of frames
    at a time through reused pyFFTW plans."""
    from ._descriptor_kernels import _add_normalized, _power_rows, _windowed_frames
    from ._fft import AUTOCORRELATION_FRAMES, autocorrelation_block

    padded = np.pad(envelope.astype(np.float64), win_length // 2, mode="linear_ramp", end_values=0)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    block = autocorrelation_block(win_length)
    total = np.zeros(win_length)
    for first in range(0, envelope.shape[0], AUTOCORRELATION_FRAMES):
        count = min(AUTOCORRELATION_FRAMES, envelope.shape[0] - first)
        _windowed_frames(padded, first, count, window, block.frames)
        _power_rows(block.forward(), count, block.power)
        _add_normalized(block.inverse(), count, win_length, 1.0 / block.size, total)
    return total / max(1, envelope.shape[0])


def tempo(envelope: np.ndarray, *, sr: float, hop_length: int, ac_size: float = 8.0,
          start_bpm: float = 120.0) -> float | None:
    """``librosa.feature.tempo`` (beats per minute) of ``envelope``, its tempogram averaged a chunk at a time;
    None for an envelope that is zero everywhere (librosa would answer the prior's peak, ``start_bpm``)."""
    import librosa

    if not envelope.any():
        return None
    win_length = int(librosa.time_to_frames(ac_size, sr=sr, hop_length=hop_length))
    mean = tempogram_mean(envelope, win_length=win_length)
    return float(librosa.feature.tempo(tg=mean[:, None], sr=sr, hop_length=hop_length, start_bpm=start_bpm)[0])
