"""CLAP audio embeddings: LAION's HTSAT audio tower, deterministic windows, exact micro-batching."""
from __future__ import annotations

CLAP_VERSION = "1"  # bump when embeddings change for the same audio, weights and parameters


def clap_params(clap_config: dict, segment_config: dict, *, weights: str, precision: str) -> dict:
    """Parameters that change a CLAP artifact (batch limits do not: batching is exact)."""
    return {
        "model": clap_config["model"], "weights": weights, "precision": precision,
        "segment_enabled": bool(segment_config["enabled"]),
        "window_seconds": float(segment_config["window_seconds"]),
        "hop_seconds": float(segment_config["hop_seconds"]),
        "aggregate_mode": segment_config["aggregate_mode"],
    }
