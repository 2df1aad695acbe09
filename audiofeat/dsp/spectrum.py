"""The transforms: windows, mel filters, STFT power, log-mel, MFCC and deltas, with librosa's names,
arguments and defaults, on numba kernels around pyFFTW. Signals are 1-D ``(n,)`` or ``(..., n)``; outputs are
float32."""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

# The numba kernels (_kernels) and pyFFTW plans (_fft) are imported inside the transforms that use them, not
# here: the window and mel functions, which the CLAP tower's construction borrows, need numpy only, and importing
# numba and pyFFTW is a noticeable part of a job's start-up.

QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
STAT_NAMES = ("mean", "std", "min", "max", "p10", "p25", "median", "p75", "p90")


class ParameterError(ValueError):
    """An argument or the audio buffer is invalid; the message names it."""


# ---------------------------------------------------------------------------------------------- validation
def _check_audio(y: np.ndarray) -> np.ndarray:
    if not isinstance(y, np.ndarray):
        raise ParameterError(f"audio must be a numpy array, not {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"audio must be floating-point, not {y.dtype}")
    if y.ndim == 0:
        raise ParameterError("audio must have at least one dimension")
    # A NaN or infinity anywhere makes the sum non-finite: one SIMD pass, then the exact check only when the
    # sum is not finite (which an overflow of huge but finite samples can also cause).
    if not np.isfinite(np.sum(y)) and not np.isfinite(y).all():
        finite = np.isfinite(y)
        bad = int(np.flatnonzero(~finite.reshape(-1))[0])
        kind = "NaN" if np.isnan(y.reshape(-1)[bad]) else "infinite"
        raise ParameterError(f"audio buffer is not finite everywhere: {kind} sample at flat index {bad}")
    return np.ascontiguousarray(y, dtype=np.float32)


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ParameterError(f"{name}={value!r} must be a positive integer")
    return int(value)


# --------------------------------------------------------------------------------------------- mel scale
def hz_to_mel(frequencies, *, htk: bool = False):
    """Hz to mel (Slaney's scale by default, HTK's with ``htk=True``), as ``librosa.hz_to_mel``."""
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + frequencies / 700.0)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(frequencies >= min_log_hz,
                    min_log_mel + np.log(np.maximum(frequencies, 1e-300) / min_log_hz) / logstep, mels)


def mel_to_hz(mels, *, htk: bool = False):
    """Mel to Hz, the inverse of :func:`hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_frequencies(n_mels: int = 128, *, fmin: float = 0.0, fmax: float = 11025.0, htk: bool = False):
    """``n_mels`` frequencies (Hz) evenly spaced on the mel scale, as ``librosa.mel_frequencies``."""
    mels = np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels)
    return mel_to_hz(mels, htk=htk)


@functools.lru_cache(maxsize=32)
def _mel_filters_cached(sr, n_fft, n_mels, fmin, fmax, htk, norm, dtype_name):
    fmax = float(sr) / 2 if fmax is None else fmax
    fftfreqs = np.linspace(0, float(sr) / 2, 1 + n_fft // 2)
    mel_f = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    elif norm is not None:
        lengths = np.linalg.norm(weights, ord=norm, axis=-1, keepdims=True)
        weights = np.where(lengths > np.finfo(np.float64).tiny, weights / np.where(lengths > 0, lengths, 1), weights)
    weights = weights.astype(dtype_name)
    weights.setflags(write=False)
    return weights


def mel_filters(*, sr: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
                htk: bool = False, norm="slaney", dtype=np.float32) -> np.ndarray:
    """Mel filterbank, as ``librosa.filters.mel``.

    Returns
    -------
    M : np.ndarray [shape=(n_mels, 1 + n_fft // 2)]
        Triangular filters; ``norm='slaney'`` divides each by its width in Hz (constant energy per band), a
        number ``p`` normalises each row to unit p-norm, ``None`` leaves peaks at 1.
    """
    _check_positive("n_fft", n_fft)
    _check_positive("n_mels", n_mels)
    if norm not in ("slaney", None) and not isinstance(norm, (int, float)):
        raise ParameterError(f"norm={norm!r} must be 'slaney', a number or None")
    return _mel_filters_cached(float(sr), int(n_fft), int(n_mels), float(fmin),
                               None if fmax is None else float(fmax), bool(htk), norm, np.dtype(dtype).name)


@functools.lru_cache(maxsize=32)
def _sparse_filters(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    weights = mel_filters(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm,
                          dtype=np.float32)
    nonzero = weights != 0
    lo = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0).astype(np.int64)
    hi = np.where(nonzero.any(axis=1), weights.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0).astype(np.int64)
    return np.ascontiguousarray(weights), lo, hi


# -------------------------------------------------------------------------------------------------- STFT
# Periodic ("fftbins=True") cosine-sum windows, as scipy.signal.get_window builds them; computed here because
# importing scipy.signal costs about half a second of every job's start-up.
_COSINE_WINDOWS = {
    "hann": (0.5, 0.5), "hanning": (0.5, 0.5), "hamming": (0.54, 0.46), "blackman": (0.42, 0.5, 0.08),
    "boxcar": (1.0,), "rectangular": (1.0,), "ones": (1.0,),
}


@functools.lru_cache(maxsize=32)
def get_window(window: str, win_length: int, n_fft: int | None = None) -> np.ndarray:
    """Periodic analysis window, as ``librosa.filters.get_window(window, win_length, fftbins=True)`` followed by
    ``librosa.util.pad_center(..., size=n_fft)``.

    Returns
    -------
    w : np.ndarray [shape=(n_fft,), dtype=float32, read-only]
        ``n_fft`` defaults to ``win_length`` (no padding).
    """
    n_fft = win_length if n_fft is None else n_fft
    if window in _COSINE_WINDOWS:
        phase = 2 * np.pi * np.arange(win_length) / win_length
        w = sum((-1) ** i * a * np.cos(i * phase) for i, a in enumerate(_COSINE_WINDOWS[window]))
        w = np.asarray(w, dtype=np.float64) * np.ones(win_length)
    else:
        import scipy.signal

        w = scipy.signal.get_window(window, win_length, fftbins=True)
    w = pad_center(w.astype(np.float32), n_fft)
    w.setflags(write=False)
    return w


def pad_center(data: np.ndarray, size: int) -> np.ndarray:
    """``data`` [shape=(n,)] zero-padded on both sides to [shape=(size,)], centred, as
    ``librosa.util.pad_center`` (the extra sample of an odd difference goes to the right)."""
    if size < data.shape[0]:
        raise ParameterError(f"pad_center: size={size} is smaller than the data ({data.shape[0]} samples)")
    left = (size - data.shape[0]) // 2
    return np.pad(data, (left, size - data.shape[0] - left))


def _framing(y: np.ndarray, n_fft: int, center: bool, pad_mode: str) -> tuple[np.ndarray, int]:
    """``(signal, offset)`` for :func:`_kernels._frame_block`: frame ``f`` starts at ``f * hop - offset``.

    Centring pads ``n_fft // 2`` on both sides; constant (zero) padding, librosa's default, is done by the
    kernel without copying the signal, other numpy modes by ``np.pad``.
    """
    if not center:
        if y.shape[-1] < n_fft:
            raise ParameterError(f"n_fft={n_fft} is too large for input signal of length={y.shape[-1]}")
        return y, 0
    if pad_mode == "constant":
        return y, n_fft // 2
    if pad_mode not in ("edge", "linear_ramp", "maximum", "mean", "median", "minimum", "reflect", "symmetric",
                        "wrap", "empty"):
        raise ParameterError(f"pad_mode={pad_mode!r} is not a numpy padding mode")
    return np.pad(y, (n_fft // 2, n_fft // 2), mode=pad_mode), 0


def _n_frames(n: int, offset: int, n_fft: int, hop_length: int) -> int:
    """Frames of a signal of ``n`` samples, padded by ``offset`` on both sides."""
    return 1 + (n + 2 * offset - n_fft) // hop_length


# Frames whose samples are read at once when the signal comes from a reader (~8 MB at hop 512): a long
# recording's STFT never needs it whole.
SPAN_FRAMES = 4096


def _stft_blocks(read: Callable[[int, int], np.ndarray], n: int, offset: int, n_fft: int, hop_length: int,
                 window: np.ndarray):
    """Yield ``(first_frame, n_frames, spectrum)`` per block of frames of a signal of ``n`` samples, read a
    span of :data:`SPAN_FRAMES` frames at a time by ``read(start, stop)``; ``spectrum`` is reused between blocks.
    """
    for first, count, spectrum, _samples, _lo in _stft_span_blocks(read, n, offset, n_fft, hop_length, window):
        yield first, count, spectrum


def _stft_span_blocks(read: Callable[[int, int], np.ndarray], n: int, offset: int, n_fft: int, hop_length: int,
                      window: np.ndarray):
    """:func:`_stft_blocks`, each block with its span's samples and the index of their first sample in the signal
    (``samples, lo``), for descriptors of the unwindowed frames.

    A span's samples are passed with the offset shifted by the span's first sample, so the kernel sees exactly
    the samples (and the zero padding at the signal's ends) it would see in the whole signal.
    """
    from ._fft import BLOCK_FRAMES, rfft_block
    from ._kernels import _frame_block

    block = rfft_block(n_fft)
    total = _n_frames(n, offset, n_fft, hop_length)
    for span in range(0, total, SPAN_FRAMES):
        span_end = min(total, span + SPAN_FRAMES)
        lo = max(0, span * hop_length - offset)
        hi = min(n, (span_end - 1) * hop_length - offset + n_fft)
        samples = read(lo, hi) if hi > lo else np.zeros(0, np.float32)
        for first in range(span, span_end, BLOCK_FRAMES):
            count = min(BLOCK_FRAMES, span_end - first)
            _frame_block(samples, offset + lo, first, count, hop_length, window, block.frames)
            yield first, count, block.execute(), samples, lo


def _array_reader(signal: np.ndarray) -> Callable[[int, int], np.ndarray]:
    return lambda start, stop: signal[start:stop]


def _stft_args(n_fft, hop_length, win_length, window):
    n_fft = _check_positive("n_fft", n_fft)
    win_length = n_fft if win_length is None else _check_positive("win_length", win_length)
    hop_length = win_length // 4 if hop_length is None else _check_positive("hop_length", hop_length)
    if win_length > n_fft:
        raise ParameterError(f"win_length={win_length} must not exceed n_fft={n_fft}")
    if not isinstance(window, str):
        raise ParameterError(f"window={window!r} must be a window name scipy.signal.get_window accepts")
    return n_fft, hop_length, get_window(window, win_length, n_fft)


def _map_channels(y: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if y.ndim == 1:
        return fn(y)
    flat = y.reshape(-1, y.shape[-1])
    results = [fn(channel) for channel in flat]
    return np.stack(results).reshape(y.shape[:-1] + results[0].shape)


def stft_power(y: np.ndarray, *, n_fft: int = 2048, hop_length: int | None = None, win_length: int | None = None,
               window: str = "hann", center: bool = True, pad_mode: str = "constant",
               power: float = 2.0) -> np.ndarray:
    """``|STFT(y)| ** power``, as ``np.abs(librosa.stft(y, ...)) ** power``.

    Returns
    -------
    S : np.ndarray [shape=(..., 1 + n_fft // 2, t)] float32
    """
    from ._fft import BLOCK_FRAMES
    from ._kernels import _power_transposed

    y = _check_audio(y)
    n_fft, hop_length, win = _stft_args(n_fft, hop_length, win_length, window)

    def one(channel):
        signal, offset = _framing(channel, n_fft, center, pad_mode)
        out = np.empty((n_fft // 2 + 1, _n_frames(signal.shape[0], offset, n_fft, hop_length)), dtype=np.float32)
        power_t = np.empty((n_fft // 2 + 1, BLOCK_FRAMES), dtype=np.float32)
        for first, count, spectrum in _stft_blocks(_array_reader(signal), signal.shape[0], offset, n_fft,
                                                   hop_length, win):
            _power_transposed(spectrum, count, float(power), power_t)
            out[:, first:first + count] = power_t[:, :count]
        return out

    return _map_channels(y, one)


def _mel_power_spans(channel, sr, n_fft, hop_length, win, center, pad_mode, power, n_mels, fmin, fmax, htk, norm):
    """Mel power of a 1-D signal, or of a reader's (``frames``, ``read(start, stop)``; centred with constant
    padding or not centred: it is read a span at a time), as consecutive ``[shape=(n_mels, frames)]`` float32
    blocks of :data:`SPAN_FRAMES` frames (the last one shorter)."""
    from ._fft import BLOCK_FRAMES
    from ._kernels import _mel_from_power, _power_transposed

    weights, lo, hi = _sparse_filters(float(sr), n_fft, n_mels, float(fmin),
                                      None if fmax is None else float(fmax), htk, norm)
    if isinstance(channel, np.ndarray) or (center and pad_mode != "constant"):
        signal, offset = _framing(channel if isinstance(channel, np.ndarray) else _read_all(channel), n_fft,
                                  center, pad_mode)
        read, n = _array_reader(signal), signal.shape[0]
    else:
        read, n = channel.read, channel.frames
        if not center and n < n_fft:
            raise ParameterError(f"n_fft={n_fft} is too large for input signal of length={n}")
        offset = n_fft // 2 if center else 0
    total = _n_frames(n, offset, n_fft, hop_length)
    power_t = np.empty((n_fft // 2 + 1, BLOCK_FRAMES), dtype=np.float32)
    acc = np.empty(BLOCK_FRAMES, dtype=np.float32)
    out = None
    for first, count, spectrum in _stft_blocks(read, n, offset, n_fft, hop_length, win):
        if first % SPAN_FRAMES == 0:  # _stft_blocks starts a span's blocks at its first frame
            if out is not None:
                yield out
            out = np.empty((n_mels, min(SPAN_FRAMES, total - first)), dtype=np.float32)
        _power_transposed(spectrum, count, float(power), power_t)
        _mel_from_power(count, weights, lo, hi, power_t, acc, out, first % SPAN_FRAMES)
    if out is not None:
        yield out


def _mel_power(channel, sr, n_fft, hop_length, win, center, pad_mode, power, n_mels, fmin, fmax, htk, norm):
    """The whole mel power matrix ``[shape=(n_mels, t)]`` of :func:`_mel_power_spans`."""
    spans = list(_mel_power_spans(channel, sr, n_fft, hop_length, win, center, pad_mode, power, n_mels, fmin, fmax,
                                  htk, norm))
    return np.concatenate(spans, axis=1) if spans else np.empty((n_mels, 0), dtype=np.float32)


def _read_all(reader) -> np.ndarray:
    return _check_audio(reader.read(0, reader.frames))


def melspectrogram(y: np.ndarray | None = None, *, sr: float = 22050, S: np.ndarray | None = None,
                   n_fft: int = 2048, hop_length: int = 512, win_length: int | None = None,
                   window: str = "hann", center: bool = True, pad_mode: str = "constant", power: float = 2.0,
                   n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None, htk: bool = False,
                   norm="slaney") -> np.ndarray:
    """Mel spectrogram, as ``librosa.feature.melspectrogram``.

    Returns
    -------
    S : np.ndarray [shape=(..., n_mels, t)] float32
        Mel-band power (``power=2``) or magnitude (``power=1``).
    """
    if S is not None:
        weights = mel_filters(sr=sr, n_fft=2 * (S.shape[-2] - 1), n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk,
                              norm=norm)
        return np.einsum("...ft,mf->...mt", S, weights, optimize=True).astype(np.float32)
    if y is None:
        raise ParameterError("melspectrogram needs y or S")
    y = _check_audio(y)
    n_fft, hop_length, win = _stft_args(n_fft, hop_length, win_length, window)
    return _map_channels(y, lambda c: _mel_power(c, sr, n_fft, hop_length, win, center, pad_mode, power,
                                                 n_mels, fmin, fmax, htk, norm))


def _ref_db(S: np.ndarray, ref, amin: float) -> float:
    value = ref(S) if callable(ref) else ref
    return 10.0 * np.log10(max(amin, float(np.abs(value))))


def power_to_db(S: np.ndarray, *, ref=1.0, amin: float = 1e-10, top_db: float | None = 80.0) -> np.ndarray:
    """Power to decibels, as ``librosa.power_to_db``: ``10 log10(max(S, amin) / ref)``, floored at
    ``max - top_db``.

    Returns
    -------
    S_db : np.ndarray [shape=S.shape] float32
    """
    if amin <= 0:
        raise ParameterError(f"amin={amin} must be strictly positive")
    if top_db is not None and top_db < 0:
        raise ParameterError(f"top_db={top_db} must be non-negative")
    S = np.asarray(S)
    if np.iscomplexobj(S):
        S = np.abs(S) ** 2
    out = np.array(S, dtype=np.float32, copy=True).reshape(-1, S.shape[-1] if S.ndim else 1)
    from ._kernels import _power_to_db_inplace

    _power_to_db_inplace(out, _ref_db(S, ref, amin), float(amin),
                                  -1.0 if top_db is None else float(top_db))
    return out.reshape(S.shape)


@functools.lru_cache(maxsize=32)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II rows ``[shape=(n_mfcc, n_mels)]``, so ``D @ X == scipy.fft.dct(X, 2, axis=0,
    norm='ortho')[:n_mfcc]``."""
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


def mfcc(y: np.ndarray | None = None, *, sr: float = 22050, S: np.ndarray | None = None, n_mfcc: int = 20,
         dct_type: int = 2, norm: str | None = "ortho", lifter: float = 0, **kwargs) -> np.ndarray:
    """MFCC, as ``librosa.feature.mfcc``: orthonormal DCT-II of the log-mel (``power_to_db`` of
    :func:`melspectrogram`, ``top_db=80``) unless a log-power mel ``S`` is given.

    Returns
    -------
    M : np.ndarray [shape=(..., n_mfcc, t)] float32
    """
    if dct_type != 2 or norm != "ortho":
        raise ParameterError("only dct_type=2 with norm='ortho' (librosa's default) is implemented")
    if S is None:
        S = power_to_db(melspectrogram(y, sr=sr, **kwargs))
    basis = dct_matrix(_check_positive("n_mfcc", n_mfcc), S.shape[-2])
    M = np.einsum("km,...mt->...kt", basis, S.astype(np.float32), optimize=True)
    if lifter > 0:
        li = 1 + (lifter / 2) * np.sin(np.pi * np.arange(1, 1 + n_mfcc, dtype=np.float32) / lifter)
        M *= li[:, None]
    elif lifter != 0:
        raise ParameterError(f"lifter={lifter} must be a non-negative number")
    return M.astype(np.float32, copy=False)


def delta(data: np.ndarray, *, width: int = 9, order: int = 1, axis: int = -1, mode: str = "interp") -> np.ndarray:
    """Local derivative by Savitzky-Golay filtering, as ``librosa.feature.delta``.

    First-order ``interp`` deltas (librosa's default) are computed here directly: inside, the least-squares
    slope over ``width`` frames; within ``width // 2`` of either end, the slope of the line fitted to the
    first (last) ``width`` frames, which is what ``interp`` evaluates there. Other orders and modes use scipy.
    """
    if not isinstance(width, (int, np.integer)) or width < 3 or width % 2 != 1:
        raise ParameterError(f"width={width} must be an odd integer >= 3")
    data = np.asarray(data)
    if mode == "interp" and width > data.shape[axis]:
        raise ParameterError(f"width={width} cannot exceed data.shape[axis]={data.shape[axis]} with mode='interp'")
    if order != 1 or mode != "interp":
        import scipy.signal

        return scipy.signal.savgol_filter(data, width, deriv=order, polyorder=order, axis=axis,
                                          mode=mode).astype(np.float32)
    x = np.moveaxis(np.asarray(data, dtype=np.float64), axis, -1)
    half = width // 2
    denom = 2.0 * sum(j * j for j in range(1, half + 1))
    out = np.empty_like(x)
    n = x.shape[-1]
    inner = np.zeros(x.shape[:-1] + (n - 2 * half,))
    for j in range(1, half + 1):
        inner += j * (x[..., half + j:n - half + j] - x[..., half - j:n - half - j])
    out[..., half:n - half] = inner / denom
    offsets = np.arange(width) - half
    out[..., :half] = (x[..., :width] @ offsets / denom)[..., None]
    out[..., n - half:] = (x[..., n - width:] @ offsets / denom)[..., None]
    return np.moveaxis(out, -1, axis).astype(np.float32)


# ------------------------------------------------------------------------------------------------ presets
PRESETS = {
    # librosa.feature.mfcc's defaults.
    "librosa": dict(n_fft=2048, hop_length=512, n_mels=128, n_mfcc=20, fmin=0.0, fmax=None),
    # The mel front end of LAION CLAP's HTSAT (laion_clap/clap_module/model_configs/HTSAT-tiny.json).
    "clap": dict(n_fft=1024, hop_length=480, n_mels=64, n_mfcc=20, fmin=50.0, fmax=14000.0),
}
