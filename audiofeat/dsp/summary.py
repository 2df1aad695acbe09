"""The fused summary the manifest stores: log-mel and MFCC statistics of a signal of any length.

The per-frame values (``n_mels`` + ``n_mfcc`` floats per frame) go to a :class:`FrameSpool`, in memory while
small and in a temporary file beyond, and are reduced a row at a time: memory follows a row and a chunk of frames,
not the recording (10 hours at hop 512 and 48 kHz are 3.4 million frames, 1.7 GB of log-mel).
"""
from __future__ import annotations

import tempfile

import numpy as np

from .spectrum import (
    QUANTILES,
    STAT_NAMES,
    ParameterError,
    _check_audio,
    _check_positive,
    _mel_power_spans,
    _stft_args,
    dct_matrix,
    delta,
)

# Per-frame values kept in memory up to this size, then in a temporary file (``TMPDIR``).
SPOOL_MEMORY_BYTES = 16 << 20
# Frames whose MFCCs are one matrix product: a recording up to this long (46.6 min at hop 512, 48 kHz) gets
# exactly the values of one product over all its frames (float32 products over other shapes can differ in the
# last bit).
MFCC_CHUNK_FRAMES = 1 << 18


class FrameSpool:
    """Blocks ``[shape=(rows, frames)]`` of one dtype appended in frame order, read back as chunks of frames or as
    whole rows ``[shape=(t,)]``."""

    def __init__(self, rows: int) -> None:
        self.rows, self.counts, self.dtype = rows, [], np.dtype(np.float32)
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)

    def __enter__(self) -> "FrameSpool":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    @property
    def frames(self) -> int:
        return sum(self.counts)

    def append(self, block: np.ndarray) -> None:
        self.dtype = block.dtype
        self.counts.append(block.shape[1])
        self._file.write(np.ascontiguousarray(block).data)

    def chunks(self, frames: int):
        """Consecutive ``[shape=(rows, frames)]`` chunks (whole blocks: at least ``frames``, or what is left)."""
        self._file.seek(0)
        first = 0
        while first < len(self.counts):
            last, held = first, 0
            while last < len(self.counts) and held < frames:
                held += self.counts[last]
                last += 1
            chunk = np.empty((self.rows, held), dtype=self.dtype)
            at = 0
            for count in self.counts[first:last]:
                chunk[:, at:at + count] = self._read(self.rows * count).reshape(self.rows, count)
                at += count
            yield chunk
            first = last

    def row(self, index: int) -> np.ndarray:
        """Row ``index`` over every frame."""
        out = np.empty(self.frames, dtype=self.dtype)
        block_start = at = 0
        for count in self.counts:
            self._file.seek((block_start + index * count) * self.dtype.itemsize)
            out[at:at + count] = self._read(count)  # copied into the row
            block_start += self.rows * count
            at += count
        return out

    def _read(self, values: int) -> np.ndarray:
        """The next ``values`` values, as a read-only view of the bytes read."""
        return np.frombuffer(self._file.read(values * self.dtype.itemsize), dtype=self.dtype)


def feature_summary(y, *, sr: float, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128,
                    n_mfcc: int = 20, fmin: float = 0.0, fmax: float | None = None, top_db: float | None = 80.0,
                    window: str = "hann", htk: bool = False, norm="slaney", center: bool = True,
                    pad_mode: str = "constant") -> dict:
    """Log-mel and MFCC statistics of mono ``y`` [shape=(n,)], without materialising the frames.

    ``y`` may also be a reader of a long signal (``frames``, and ``read(start, stop)`` -> float32, as
    :class:`audiofeat.wav.WavReader`): it is read a span at a time, with the same result.

    The log-mel is ``power_to_db(melspectrogram(y, ...), top_db=top_db)`` and the MFCC its orthonormal DCT-II,
    exactly as :func:`mfcc` computes them; defaults are librosa's (see :data:`PRESETS`).

    Returns
    -------
    dict
        ``{"mel": {stat: [n_mels floats]}, "mfcc": {stat: [n_mfcc floats], "delta_mean": [...],
        "delta_std": [...]}, "n_frames": t}``, ``stat`` in :data:`STAT_NAMES` (population std; p10..p90 are
        linearly interpolated percentiles, as ``np.percentile``).
    """
    if isinstance(y, np.ndarray) or not hasattr(y, "read"):
        y = _check_audio(y)
        if y.ndim != 1:
            raise ParameterError(f"feature_summary takes mono audio of shape (n,), not {y.shape}")
    n_fft, hop_length, win = _stft_args(n_fft, hop_length, None, window)
    dct = dct_matrix(_check_positive("n_mfcc", n_mfcc), n_mels)
    with FrameSpool(n_mels) as log_mel, FrameSpool(n_mfcc) as mfccs:
        floor = _spool_log_mel(log_mel, _mel_power_spans(y, sr, n_fft, hop_length, win, center, pad_mode, 2.0,
                                                         n_mels, fmin, fmax, htk, norm), top_db)
        for chunk in log_mel.chunks(MFCC_CHUNK_FRAMES):
            mfccs.append(dct @ _floored(chunk, floor))
        summary = {"mel": _row_summaries(log_mel, floor), "mfcc": _row_summaries(mfccs, None),
                   "n_frames": log_mel.frames}
        summary["mfcc"].update(_delta_summaries(mfccs))
    return summary


def _spool_log_mel(spool: FrameSpool, spans, top_db: float | None):
    """Each span's mel power in decibels into ``spool``; returns the ``top_db`` floor (None: no floor), which
    needs the whole recording's maximum, so it is applied as the values are read back."""
    from ._kernels import _power_to_db_inplace

    peak = None
    for block in spans:
        _power_to_db_inplace(block, 0.0, 1e-10, -1.0)
        if block.size:
            peak = block.max() if peak is None else max(peak, block.max())
        spool.append(block)
    if top_db is None or top_db < 0 or peak is None:
        return None
    return peak - float(top_db)


def _floored(values: np.ndarray, floor) -> np.ndarray:
    if floor is not None:
        np.maximum(values, floor, out=values)
    return values


def _row_summaries(spool: FrameSpool, floor) -> dict:
    """:data:`STAT_NAMES` of each row, as lists over the rows."""
    from ._kernels import _row_stats

    quantiles = np.asarray(QUANTILES)
    stats = np.empty((spool.rows, 4 + len(QUANTILES)))
    for index in range(spool.rows):
        _row_stats(_floored(spool.row(index), floor)[None, :], quantiles, stats[index:index + 1])
    return {name: stats[:, column].tolist() for column, name in enumerate(STAT_NAMES)}


def _delta_summaries(mfccs: FrameSpool) -> dict:
    """Mean and std of each MFCC row's delta (width 9, or the widest odd width a short input allows, as
    librosa needs); zeros under three frames."""
    n_frames = mfccs.frames
    if n_frames < 3:
        return {"delta_mean": [0.0] * mfccs.rows, "delta_std": [0.0] * mfccs.rows}
    width = min(9, n_frames if n_frames % 2 else n_frames - 1)
    means, stds = [], []
    for index in range(mfccs.rows):
        d = delta(mfccs.row(index)[None, :], width=width)
        means.append(float(d.mean(axis=1, dtype=np.float64)[0]))
        stds.append(float(d.std(axis=1, dtype=np.float64)[0]))
    return {"delta_mean": means, "delta_std": stds}
