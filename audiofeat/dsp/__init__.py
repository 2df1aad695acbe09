"""Log-mel and MFCC with librosa's names, arguments and defaults, on numba kernels around pyFFTW.

Swap ``librosa.feature.mfcc`` for :func:`mfcc` (or ``melspectrogram``, ``power_to_db``, ``librosa.filters.mel``
for :func:`mel_filters`) and get the same array within float32 rounding. The transforms are in
:mod:`.spectrum`; the fused :func:`feature_summary` (:mod:`.summary`) computes everything the manifest stores
without materialising the frames.
"""
from .spectrum import (
                       PRESETS,
                       STAT_NAMES,
                       ParameterError,
                       dct_matrix,
                       delta,
                       get_window,
                       hz_to_mel,
                       mel_filters,
                       mel_frequencies,
                       mel_to_hz,
                       melspectrogram,
                       mfcc,
                       pad_center,
                       power_to_db,
                       stft_power,
)
from .summary import feature_summary

__all__ = [
    "PRESETS", "stft_power", "mel_filters", "mel_frequencies", "hz_to_mel", "mel_to_hz", "get_window", "pad_center",
    "melspectrogram", "power_to_db", "mfcc", "delta", "dct_matrix", "feature_summary", "STAT_NAMES", "ParameterError",
]
