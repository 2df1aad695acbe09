"""The speech quality extractor against speechmos's own DNSMOS (``speechmos.dnsmos.run``, its ONNX models from
its wheel) on the same 16 kHz audio: a file shorter than one segment, longer ones streamed in spans of any size."""
from __future__ import annotations

import numpy as np
import orjson
import pytest

from audiofeat.extractors import speech
from audiofeat.extractors.speech_quality import SpeechQualityExtractor, SpeechQualityParams, models_digest
from audiofeat.inputs.media import load_audio, resample
from audiofeat.inputs.wav import read_wav, write_wav
from audiofeat.store.tables import DecodeRecord


def _record(wav) -> DecodeRecord:
    return DecodeRecord("key", str(wav), "ok", audio={"wav": str(wav), "duration_s": 0.0})


def _theirs(wav) -> dict:
    from speechmos import dnsmos

    y, sr = read_wav(wav)
    result = dnsmos.run(np.clip(resample(y, sr, 16000), -1, 1), 16000)
    return {f"{name}_mos": float(result[f"{name}_mos"]) for name in ("sig", "bak", "ovrl", "p808")}


def _ours(wav) -> dict:
    extractor = SpeechQualityExtractor(SpeechQualityParams(models_digest()), wav_params_hash=None)
    return orjson.loads(extractor.compute_one(_record(wav)).payload)


@pytest.mark.parametrize("seconds", [4.8, 9.9, 23.5])
def test_mos_is_speechmos_own_on_short_and_long_speech(espeak_wav, tmp_path, monkeypatch, seconds):
    _, sentence = load_audio(str(espeak_wav))
    y = np.resize(np.concatenate([sentence, np.zeros(12345, np.float32)]), int(seconds * 48000))
    wav = tmp_path / "speech.wav"
    write_wav(wav, [y], sr=48000)
    monkeypatch.setattr(speech, "READ_SAMPLES", 7000)  # spans that cut segments and seconds anywhere
    ours, theirs = _ours(wav), _theirs(wav)
    assert 1 <= ours["segments"] <= max(1, int(seconds) - 9)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-5), name
    assert 1 < ours["ovrl_mos"] < 5


def test_noise_scores_lower_than_speech(espeak_wav, tmp_path, rng):
    _, sentence = load_audio(str(espeak_wav))
    write_wav(tmp_path / "speech.wav", [sentence], sr=48000)
    write_wav(tmp_path / "noise.wav", [(0.3 * rng.standard_normal(sentence.size)).astype(np.float32)], sr=48000)
    speech_block, noise_block = _ours(tmp_path / "speech.wav"), _ours(tmp_path / "noise.wav")
    assert noise_block["bak_mos"] + 1 < speech_block["bak_mos"]
    for name, value in _theirs(tmp_path / "noise.wav").items():
        assert noise_block[name] == pytest.approx(value, abs=1e-5), name
