"""The loudness extractor: BS.1770 loudness, peaks, clipping, silence, DC and bandwidth on signals whose values
are known, and a run that computes only it (no torch in any job)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from audiofeat.inputs.media import resample
from audiofeat.extractors.loudness import LoudnessParams, loudness_block
from audiofeat.testing.media import make_audio

from conftest import read_manifests, run_snakemake, write_config

SR = 48000
PARAMS = LoudnessParams(SR)


def _sine(amplitude: float, frequency: float = 997.0, seconds: float = 5.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * frequency * t + phase)).astype(np.float32)


def test_a_997_hz_sine_has_the_loudness_bs1770_gives_it():
    block = loudness_block(_sine(0.5), PARAMS)
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS; half its amplitude 6.02 dB less.
    assert block["integrated_lufs"] == pytest.approx(-3.01 - 6.02, abs=0.05)
    assert block["sample_peak_dbfs"] == pytest.approx(-6.02, abs=0.01)
    assert block["clipping_ratio"] == 0.0 and block["silent_frame_ratio"] == 0.0
    assert abs(block["dc_offset"]) < 1e-4
    assert block["effective_bandwidth_hz"] == pytest.approx(997, abs=60)  # nothing above the tone


def test_true_peak_sees_the_peak_between_samples():
    # A quarter-rate sine sampled at 45 degrees: every sample at 0.707 of a peak that lies between them.
    block = loudness_block(_sine(1.0, frequency=SR / 4, seconds=1.0, phase=np.pi / 4), PARAMS)
    assert block["sample_peak_dbfs"] == pytest.approx(-3.01, abs=0.02)
    assert block["true_peak_dbfs"] == pytest.approx(0.0, abs=0.3)


def test_clipping_silence_and_dc_offset():
    clipped = np.clip(_sine(2.0), -1.0, 1.0)  # |2 sin| >= 1 on two thirds of the cycle
    assert loudness_block(clipped, PARAMS)["clipping_ratio"] == pytest.approx(2 / 3, abs=0.01)
    half_silent = np.concatenate([_sine(0.3, seconds=1.0), np.zeros(SR, np.float32)])
    assert loudness_block(half_silent, PARAMS)["silent_frame_ratio"] == pytest.approx(0.5, abs=0.01)
    silence = loudness_block(np.zeros(SR, np.float32), PARAMS)
    assert silence["integrated_lufs"] is None and silence["sample_peak_dbfs"] is None
    assert silence["silent_frame_ratio"] == 1.0 and silence["effective_bandwidth_hz"] == 0.0
    offset = loudness_block(_sine(0.2) + np.float32(0.1), PARAMS)
    assert offset["dc_offset"] == pytest.approx(0.1, abs=1e-4)


def test_bandwidth_gives_away_audio_upsampled_from_8_khz(rng):
    narrow = resample((0.3 * rng.standard_normal(8000 * 3)).astype(np.float32), 8000, SR)
    wide = (0.3 * rng.standard_normal(SR * 3)).astype(np.float32)
    assert 3600 <= loudness_block(narrow, PARAMS)["effective_bandwidth_hz"] <= 4100
    assert loudness_block(wide, PARAMS)["effective_bandwidth_hz"] >= 23000


def test_a_run_of_loudness_alone_imports_no_torch_and_has_no_other_block(tmp_path):
    media = tmp_path / "media"
    make_audio(media / "tone.flac", seconds=2.0, sr=44100)
    make_audio(media / "noise.wav", seconds=1.5, sr=16000, source="noise")
    (media / "broken.mp3").write_bytes(b"not media")
    blocker = tmp_path / "no-torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('a job imported torch')\n")
    config = write_config(tmp_path / "config.yaml", input_dir=str(media), extractors=["loudness"],
                          cache={"dir": str(tmp_path / "cache")}, clap={"checkpoint": "/nowhere.pt"})
    run_snakemake(tmp_path, config, env={"PYTHONPATH": str(blocker.parent)})
    results = tmp_path / "results"
    manifests = {r["source"]["path"].rsplit("/", 1)[-1]: r for r in read_manifests(results)}
    assert manifests["broken.mp3"]["status"] == "error"
    for name in ("tone.flac", "noise.wav"):
        record = manifests[name]
        assert record["status"] == "ok" and "features" not in record and "clap" not in record
        assert set(record["extractors"]) == {"decode", "loudness"}
    assert manifests["tone.flac"]["loudness"]["effective_bandwidth_hz"] == pytest.approx(440, abs=60)
    assert 7000 < manifests["noise.wav"]["loudness"]["effective_bandwidth_hz"] <= 8000  # white noise sampled at 16 kHz
    assert not (results / "embeddings.npy").exists() and not (results / "bookkeeping" / "clap").exists()
    schema = json.loads((results / "manifest.schema.json").read_text())
    assert "loudness" in schema["properties"] and "clap" not in schema["properties"]
