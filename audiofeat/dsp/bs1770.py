"""Loudness as a meter measures it (ITU-R BS.1770-4, EBU R128 / Tech 3342), on every channel of a file at its
own rate, streamed: :class:`LoudnessMeter` takes ``(channels, n)`` chunks and keeps only one 100 ms energy per
hop (2.9 MB for ten hours), the peaks and a spectrum.

Gating blocks are those of FFmpeg's ``ebur128`` filter, the reference the tests compare with: a 400 ms block
ends at every 100 ms boundary from 400 ms on (a 3 s block, for the loudness range, from 3 s on); samples after
the last whole 100 ms are in no block. Channel weights: 1.0, surround (back and side) 1.41, LFE left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ABSOLUTE_GATE_LUFS = -70.0
INTEGRATED_RELATIVE_GATE_LU = -10.0
RANGE_RELATIVE_GATE_LU = -20.0
SURROUND_WEIGHT = 1.41
# FFmpeg's (and libav's) channel names: the surrounds BS.1770 weights by 1.41, and the LFEs it leaves out.
SURROUND_CHANNELS = frozenset({"BL", "BC", "BR", "SL", "SR", "TBL", "TBC", "TBR", "SDL", "SDR"})
LFE_CHANNELS = frozenset({"LFE", "LFE2", "LFE1"})


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """The K-weighting filter (the shelf, then the RLB high-pass) as second-order sections [shape=(2, 6)] at
    ``sample_rate``, from BS.1770's analog prototypes; at 48 kHz they are the standard's tabled coefficients."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, high_pass])


def channel_weights(names: list[str]) -> np.ndarray:
    """BS.1770-4's weight of each channel [shape=(channels,)] from its FFmpeg name (``FL``, ``LFE``, ``SL``...)."""
    return np.array([0.0 if n in LFE_CHANNELS else SURROUND_WEIGHT if n in SURROUND_CHANNELS else 1.0
                     for n in names])


def energy_to_lufs(power: float) -> float:
    return -0.691 + 10 * math.log10(power) if power > 0 else -math.inf


def block_powers(hop_energy: np.ndarray, hops: int, hop: int) -> np.ndarray:
    """Mean-square power of each block of ``hops`` consecutive hops [shape=(len - hops + 1,)] from the weighted
    energy summed over each hop of ``hop`` samples [shape=(len,)]; empty when there are fewer hops."""
    if hop_energy.shape[0] < hops:
        return np.zeros(0)
    total = np.concatenate([[0.0], np.cumsum(hop_energy)])
    return (total[hops:] - total[:-hops]) / (hops * hop)


def gated(powers: np.ndarray, relative_gate_lu: float) -> np.ndarray:
    """The blocks' powers that pass the absolute gate (-70 LUFS) and then the relative gate, ``relative_gate_lu``
    below the loudness of the mean power of those that passed the first."""
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(powers)
    kept = powers[loudness >= ABSOLUTE_GATE_LUFS]
    if not kept.size:
        return kept
    threshold = energy_to_lufs(float(kept.mean())) + relative_gate_lu
    return kept[-0.691 + 10 * np.log10(kept) >= threshold]


def integrated_loudness(hop_energy: np.ndarray, hop: int) -> float | None:
    """Integrated loudness (LUFS) of 400 ms blocks every 100 ms; None when no block passes the gates."""
    kept = gated(block_powers(hop_energy, 4, hop), INTEGRATED_RELATIVE_GATE_LU)
    return energy_to_lufs(float(kept.mean())) if kept.size else None


def loudness_range(hop_energy: np.ndarray, hop: int) -> float | None:
    """Loudness range (LU, EBU Tech 3342): the 10th to the 95th percentile of the gated 3 s blocks' loudness,
    the percentiles ranked as FFmpeg ranks them; None for less than 3 s, or nothing above the gates."""
    kept = gated(block_powers(hop_energy, 30, hop), RANGE_RELATIVE_GATE_LU)
    if not kept.size:
        return None
    loudness = np.sort(-0.691 + 10 * np.log10(kept))
    low, high = (max(1, int(share * loudness.size + 0.5)) for share in (0.10, 0.95))
    return float(loudness[high - 1] - loudness[low - 1])


@dataclass
class MeterReading:
    """What :class:`LoudnessMeter` measured: loudness, and per channel [shape=(channels,)] the rest."""

    integrated_lufs: float | None
    loudness_range_lu: float | None
    sample_peak: np.ndarray
    true_peak: np.ndarray
    clipped_samples: np.ndarray
    sum: np.ndarray  # of the samples, for the DC offset
    samples: int
    silent_frames: int
    frames: int
    spectrum: np.ndarray  # the channels' summed Welch power, one-sided [shape=(segment // 2 + 1,)]
    segment: int  # the Welch segment's samples (the file's, when shorter than one)

    def bandwidth_hz(self, sample_rate: int, floor_db: float) -> float:
        """Highest frequency (Hz) whose long-term power is within ``floor_db`` of the loudest band; 0 for
        silence. Blackman-Harris: its sidelobes (-92 dB) stay under the floor, Hann's do not."""
        if not self.spectrum.any():
            return 0.0
        above = np.nonzero(self.spectrum >= self.spectrum.max() * 10 ** (floor_db / 10))[0]
        return float(above[-1] * sample_rate / self.segment)


class _Frames:
    """Fixed frames (``length`` samples every ``step``) of a stream of ``(channels, n)`` chunks; what does not
    fill a frame yet waits for the next chunk (:attr:`rest`)."""

    def __init__(self, channels: int, length: int, step: int) -> None:
        self.length, self.step = length, step
        self.rest = np.zeros((channels, 0))

    def feed(self, x: np.ndarray) -> np.ndarray:
        """The frames completed by ``x`` [shape=(channels, frames, length)], views of the stream."""
        buf = np.concatenate([self.rest, x], axis=1) if self.rest.shape[1] else x
        if buf.shape[1] < self.length:
            self.rest = buf
            return np.zeros((buf.shape[0], 0, self.length))
        count = (buf.shape[1] - self.length) // self.step + 1
        windows = np.lib.stride_tricks.sliding_window_view(buf, self.length, axis=1)[:, ::self.step][:, :count]
        self.rest = buf[:, count * self.step:]
        return windows


class _TruePeak:
    """Per-channel peak after ``oversampling``-times polyphase upsampling (BS.1770-4 Annex 2), streamed: each
    chunk is upsampled with :data:`CONTEXT` samples on either side, so every sample sees what the whole signal
    would give it (zeros before the start and after the end, as for the whole signal at once)."""

    CONTEXT = 64  # input samples; resample_poly's filter reaches 10 on either side at 4x

    def __init__(self, channels: int, oversampling: int) -> None:
        self.up = oversampling
        self.tail = np.zeros((channels, 2 * self.CONTEXT))
        self.peak = np.zeros(channels)

    def feed(self, x: np.ndarray) -> None:
        from scipy.signal import resample_poly

        segment = np.concatenate([self.tail, x], axis=1)
        out = resample_poly(segment, self.up, 1, axis=1)
        inner = out[:, self.up * self.CONTEXT: self.up * (segment.shape[1] - self.CONTEXT)]
        if inner.size:
            self.peak = np.maximum(self.peak, np.abs(inner).max(axis=1))
        self.tail = segment[:, -2 * self.CONTEXT:]

    def finish(self) -> np.ndarray:
        self.feed(np.zeros((self.tail.shape[0], self.CONTEXT)))
        return self.peak


class LoudnessMeter:
    """BS.1770-4 loudness and the signal's condition, measured a chunk at a time.

    ``names``: the channels' FFmpeg names (their weights); ``clip_level``: ``|sample|`` counted as clipped;
    ``silence_dbfs`` and ``frame_s``: a frame whose mean power over the channels is below it is near-silent;
    ``nfft``: the Welch segment of the long-term spectrum (Blackman-Harris, half overlapping, mean removed).
    """

    def __init__(self, sample_rate: int, names: list[str], *, clip_level: float, silence_dbfs: float,
                 frame_s: float, true_peak_oversampling: int, nfft: int) -> None:
        channels = len(names)
        self.sample_rate, self.hop, self.clip_level = sample_rate, sample_rate // 10, clip_level
        self.weights = channel_weights(names)
        self.sos = k_weighting_sos(sample_rate)
        self.zi = np.zeros((self.sos.shape[0], channels, 2))
        self.hops = _Frames(1, self.hop, self.hop)
        self.hop_energy: list[np.ndarray] = []
        self.silence = 10 ** (silence_dbfs / 10)
        self.frames = _Frames(1, max(1, round(frame_s * sample_rate)), max(1, round(frame_s * sample_rate)))
        self.silent_frames = self.frame_count = 0
        self.welch = _Frames(channels, nfft, nfft // 2)
        self.window = _blackman_harris(nfft)
        self.spectrum = np.zeros(nfft // 2 + 1)
        self.true_peak = _TruePeak(channels, true_peak_oversampling)
        self.peak, self.clipped, self.sum = np.zeros(channels), np.zeros(channels, np.int64), np.zeros(channels)
        self.samples, self.head = 0, np.zeros((channels, 0))  # the first nfft samples: a short file's spectrum

    def feed(self, x: np.ndarray) -> None:
        """Add ``x`` [shape=(channels, n)], float, full scale 1."""
        from scipy.signal import sosfilt

        x = np.asarray(x, dtype=np.float64)
        z, self.zi = sosfilt(self.sos, x, axis=1, zi=self.zi)
        weighted = (self.weights @ (z * z))[None]
        self.hop_energy.append(self.hops.feed(weighted)[0].sum(axis=1))
        power = self.frames.feed((x * x).mean(axis=0)[None])[0].mean(axis=1)
        self.silent_frames += int(np.count_nonzero(power < self.silence))
        self.frame_count += power.shape[0]
        segments = self.welch.feed(x)
        if segments.shape[1]:
            spectra = np.fft.rfft((segments - segments.mean(axis=2, keepdims=True)) * self.window, axis=2)
            self.spectrum += (np.abs(spectra) ** 2).sum(axis=(0, 1))
        self.true_peak.feed(x)
        magnitude = np.abs(x)
        if x.shape[1]:
            self.peak = np.maximum(self.peak, magnitude.max(axis=1))
        self.clipped += np.count_nonzero(magnitude >= self.clip_level, axis=1)
        self.sum += x.sum(axis=1)
        if self.head.shape[1] < self.window.shape[0]:
            self.head = np.concatenate([self.head, x[:, : self.window.shape[0] - self.head.shape[1]]], axis=1)
        self.samples += x.shape[1]

    def finish(self) -> MeterReading:
        energy = np.concatenate(self.hop_energy) if self.hop_energy else np.zeros(0)
        tail = self.frames.rest[0]
        if tail.size:  # the last, shorter frame counts too
            self.silent_frames += int((tail * tail).mean() < self.silence)
            self.frame_count += 1
        segment = self.window.shape[0] if self.samples >= self.window.shape[0] else self.samples
        spectrum = self.spectrum if segment == self.window.shape[0] else _one_segment(self.head)
        spectrum[1: None if segment % 2 else -1] *= 2  # one-sided, as scipy's welch
        return MeterReading(integrated_lufs=integrated_loudness(energy, self.hop),
                            loudness_range_lu=loudness_range(energy, self.hop), sample_peak=self.peak,
                            true_peak=self.true_peak.finish(), clipped_samples=self.clipped, sum=self.sum,
                            samples=self.samples, silent_frames=self.silent_frames, frames=self.frame_count,
                            spectrum=spectrum, segment=max(1, segment))


def _blackman_harris(n: int) -> np.ndarray:
    from scipy.signal import get_window

    return get_window("blackmanharris", n)


def _one_segment(x: np.ndarray) -> np.ndarray:
    """The power spectrum of a signal shorter than one Welch segment, as one segment of its own length."""
    if not x.shape[1]:
        return np.zeros(1)
    spectra = np.fft.rfft((x - x.mean(axis=1, keepdims=True)) * _blackman_harris(x.shape[1]), axis=1)
    return (np.abs(spectra) ** 2).sum(axis=0)
