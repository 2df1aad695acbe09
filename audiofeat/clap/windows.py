"""Deterministic CLAP windows and their aggregation into one clip embedding.

Window rule (``plan_windows``), with ``W`` the window and ``H`` the hop, in samples, for ``n`` samples of audio:

- ``n <= W``: one window ``[0, n)``, prepared exactly as LAION does (repeat the clip ``floor(L / n)`` times, then
  zero-pad to the model input length ``L``).
- ``n > W`` with segmentation: windows start at ``0, H, 2H, ...`` as long as they fit (``k H + W <= n``); when the
  last of them ends before ``n``, one more window ``[n - W, n)`` is aligned to the end, so every window holds only
  real audio and the tail is covered once. A length on the hop grid (``n = W + k H``) gets no extra window.
- ``n > W`` without segmentation: the one centred window ``[(n - W) // 2, (n - W) // 2 + W)``.

Windows shorter than the model input (``segment.window_seconds < 10``) are repeat-padded like short clips.
Every window goes through LAION's int16 round trip (clip to [-1, 1], ``* 32767``, truncate, ``/ 32767``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATE_MODES = ("mean", "weighted", "robust")
SILENCE_DBFS = -60.0  # frames quieter than this count as silence for the weighted mode
SILENCE_FRAME_S = 0.02
GEOMEDIAN_ITERATIONS = 64
GEOMEDIAN_TOL = 1e-7


@dataclass(frozen=True)
class Window:
    start: int  # first real sample
    end: int  # one past the last real sample


def plan_windows(n: int, window: int, hop: int, *, segment: bool = True) -> list[Window]:
    """Windows over ``n`` samples by the module's rule (``window`` and ``hop`` in samples)."""
    if n <= 0:
        raise ValueError(f"n={n} must be positive")
    if window <= 0 or hop <= 0 or hop > window:
        raise ValueError(f"window={window}, hop={hop}: need 0 < hop <= window")
    if n <= window:
        return [Window(0, n)]
    if not segment:
        start = (n - window) // 2
        return [Window(start, start + window)]
    windows = [Window(s, s + window) for s in range(0, n - window + 1, hop)]
    if windows[-1].end < n:
        windows.append(Window(n - window, n))
    return windows


def quantise_int16(y: np.ndarray) -> np.ndarray:
    """The int16 half of LAION's round trip: ``(clip(y, -1, 1) * 32767).astype(int16)``."""
    return (np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)


def int16_round_trip(y: np.ndarray) -> np.ndarray:
    """LAION's quantisation: ``(clip(y, -1, 1) * 32767).astype(int16) / 32767`` as float32."""
    return quantise_int16(y).astype(np.float32) / np.float32(32767.0)


def repeat_pad(y: np.ndarray, length: int) -> np.ndarray:
    """LAION's ``repeatpad``: tile ``floor(length / len(y))`` times, zero-pad to ``length``."""
    if y.shape[0] >= length:
        return y[:length]
    out = np.zeros(length, dtype=np.float32)
    tiled = np.tile(y, length // y.shape[0])
    out[: tiled.shape[0]] = tiled
    return out


def model_inputs(y: np.ndarray, windows: list[Window], input_length: int) -> np.ndarray:
    """Model-ready windows ``[shape=(len(windows), input_length)]`` float32 from mono ``y`` [shape=(n,)]."""
    quantised = int16_round_trip(y)
    return np.stack([repeat_pad(quantised[w.start:w.end], input_length) for w in windows])


def active_fraction(y: np.ndarray, window: Window, window_length: int, sr: int) -> float:
    """Share of a window's nominal length holding real, non-silent audio (20 ms frames above -60 dBFS RMS)."""
    segment = y[window.start:window.end].astype(np.float64)
    frame = max(1, int(SILENCE_FRAME_S * sr))
    n_frames = max(1, segment.shape[0] // frame)
    trimmed = segment[: n_frames * frame].reshape(n_frames, -1) if segment.shape[0] >= frame else segment[None, :]
    rms = np.sqrt(np.mean(trimmed ** 2, axis=1))
    loud = rms > 10 ** (SILENCE_DBFS / 20)
    return float(loud.mean() * min(1.0, segment.shape[0] / window_length))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def geometric_median(points: np.ndarray, *, iterations: int = GEOMEDIAN_ITERATIONS,
                     tol: float = GEOMEDIAN_TOL) -> np.ndarray:
    """Weiszfeld's geometric median of ``points`` [shape=(k, d)]: robust to a minority of outlier rows."""
    estimate = points.mean(axis=0)
    for _ in range(iterations):
        distances = np.maximum(np.linalg.norm(points - estimate, axis=1), 1e-12)
        weights = 1.0 / distances
        updated = (weights[:, None] * points).sum(axis=0) / weights.sum()
        if np.linalg.norm(updated - estimate) < tol:
            return updated
        estimate = updated
    return estimate


def aggregate(embeddings: np.ndarray, mode: str, weights: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """One unit embedding from window embeddings ``[shape=(k, d)]``, and the strategy record for the manifest.

    - ``mean``: mean of the windows, re-normalised.
    - ``weighted``: mean weighted by each window's :func:`active_fraction`, re-normalised (equal weights when
      every window is silent).
    - ``robust``: geometric median (Weiszfeld), re-normalised.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if mode == "mean":
        vector, record = embeddings.mean(axis=0), {"mode": "mean", "renormalized": True}
    elif mode == "weighted":
        w = np.ones(len(embeddings)) if weights is None or not np.any(np.asarray(weights) > 0) else np.asarray(weights, float)
        vector = (w[:, None] * embeddings).sum(axis=0) / w.sum()
        record = {"mode": "weighted", "weight": "active_fraction", "silence_dbfs": SILENCE_DBFS,
                  "frame_s": SILENCE_FRAME_S, "weights": [round(float(x), 6) for x in w], "renormalized": True}
    elif mode == "robust":
        vector = geometric_median(embeddings)
        record = {"mode": "robust", "method": "geometric_median_weiszfeld", "iterations": GEOMEDIAN_ITERATIONS,
                  "tol": GEOMEDIAN_TOL, "renormalized": True}
    else:
        raise ValueError(f"aggregate_mode={mode!r} must be one of {AGGREGATE_MODES}")
    record["windows"] = int(len(embeddings))
    return _unit(vector).astype(np.float32), record
