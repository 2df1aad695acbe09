"""The features extractor: log-mel and MFCC statistics of a decoded WAV, from :mod:`audiofeat.dsp`."""
from __future__ import annotations

import numpy as np

FEATURES_VERSION = "1"  # bump when the statistics change for the same audio and parameters


def features_params(features_config: dict, sr: int) -> dict:
    """Keyword arguments of :func:`audiofeat.dsp.feature_summary` from the config's ``features`` block.

    Everything that changes the output is here, so this dict is also what the artifact key hashes.
    """
    return {
        "sr": int(sr), "n_fft": int(features_config["n_fft"]), "hop_length": int(features_config["hop_length"]),
        "n_mels": int(features_config["n_mels"]), "n_mfcc": int(features_config["n_mfcc"]),
        "fmin": float(features_config["fmin"]),
        "fmax": None if features_config["fmax"] is None else float(features_config["fmax"]),
        "top_db": None if features_config["top_db"] is None else float(features_config["top_db"]),
        "window": "hann", "htk": False, "norm": "slaney", "center": True, "pad_mode": "constant",
    }


def extract_features(y: np.ndarray, params: dict) -> dict:
    """The manifest's ``features`` block for mono ``y`` [shape=(n,)] at ``params["sr"]``."""
    from .dsp import feature_summary

    summary = feature_summary(y, **params)
    return {"params": params, "mfcc": summary["mfcc"], "mel": summary["mel"], "n_frames": summary["n_frames"]}
