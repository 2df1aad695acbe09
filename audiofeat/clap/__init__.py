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


def clap_precision(device: str, enable_amp: bool) -> str:
    """Precision of the forward passes: autocast to float16 on CUDA when ``enable_amp``, else float32."""
    return "fp16-autocast" if enable_amp and device.startswith("cuda") else "fp32"
