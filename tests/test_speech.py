"""The speech extractor against silero-vad's own get_speech_timestamps on the same 16 kHz audio (its model from
its wheel, real speech and the machine's recordings), streamed in spans of any size, and in a run."""
from __future__ import annotations

import numpy as np
import pytest

from audiofeat.extractors import speech
from audiofeat.extractors.decode import DecodeExtractor, DecodeParams
from audiofeat.extractors.profiling import JobProfile
from audiofeat.extractors.speech import SpeechExtractor, SpeechParams, model_digest
from audiofeat.inputs.inventory import identify_inputs
from audiofeat.inputs.media import resample
from audiofeat.inputs.wav import read_wav, write_wav
from audiofeat.store.artifacts import ArtifactStore
from audiofeat.testing.media import make_audio

from conftest import read_manifests, run_snakemake, write_config

PARAMS = SpeechParams(0.5, 250, 100, 30, model_digest())


def _decoded(paths, store_dir):
    decoder = DecodeExtractor(DecodeParams(48000))
    store = ArtifactStore(str(store_dir))
    rows = [{"path": r.path, "content_key": r.content_key, "stat": r.stat}
            for r in identify_inputs([(str(p), p.name) for p in paths], None)]
    return [decoder.decode(row, store, JobProfile("decode", "test"))[0] for row in rows]


def _silero(wav_path) -> list[list[float]]:
    """silero-vad's own call on the WAV resampled to 16 kHz at once."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    y, sr = read_wav(wav_path)
    segments = get_speech_timestamps(torch.from_numpy(resample(y, sr, 16000)), load_silero_vad(), sampling_rate=16000)
    return [[s["start"] / 16000, s["end"] / 16000] for s in segments]


def _block(extractor, record) -> dict:
    import orjson

    return orjson.loads(extractor.compute_one(record).payload)


def test_speech_segments_are_silero_vads_own_on_speech_and_real_recordings(espeak_wav, real_recordings, tmp_path):
    extractor = SpeechExtractor(PARAMS, wav_params_hash=None)
    records = _decoded([espeak_wav, *real_recordings[:12]], tmp_path / "store")
    found_speech = 0
    for record in records:
        block = _block(extractor, record)
        assert block["segments"] == _silero(record.wav), record.path
        assert block["segment_count"] == len(block["segments"])
        found_speech += block["speech_ratio"] > 0.3
    assert _block(extractor, records[0])["speech_ratio"] > 0.5  # the sentence
    assert found_speech >= 5  # the ALSA channel names are spoken too


def test_spans_of_any_size_give_the_same_segments(espeak_wav, tmp_path, monkeypatch):
    """The sentence between stretches of silence, read 1,000 samples at a time: windows and resampling cross
    every span's edge."""
    y, sr = read_wav(_decoded([espeak_wav], tmp_path / "store")[0].wav)
    long = np.concatenate([np.zeros(sr, np.float32), y, np.zeros(2 * sr, np.float32), y, np.zeros(777, np.float32)])
    wav = tmp_path / "long.wav"
    write_wav(wav, [long], sr=sr)
    record = _decoded([wav], tmp_path / "store2")[0]
    whole = _block(SpeechExtractor(PARAMS, wav_params_hash=None), record)
    monkeypatch.setattr(speech, "READ_SAMPLES", 1000)
    assert _block(SpeechExtractor(PARAMS, wav_params_hash=None), record) == whole
    assert whole["segments"] == _silero(record.wav) and whole["segment_count"] >= 2
    assert whole["first_speech_s"] == pytest.approx(1.0, abs=0.3)


def test_a_run_with_speech_speech_quality_pitch_speaker_and_spectral_has_their_blocks_in_manifests_and_dataset(
        espeak_wav, tmp_path):
    import shutil

    from audiofeat.outputs.dataset import dataset_manifests

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(espeak_wav, media / "sentence.wav")
    make_audio(media / "tone.flac", seconds=2.0, sr=44100)
    config = write_config(tmp_path / "c.yaml", input_dir=str(media),
                          extractors=["speech", "speech_quality", "pitch", "speaker", "spectral"],
                          cache={"dir": str(tmp_path / "cache")})
    run_snakemake(tmp_path, config)
    results = tmp_path / "results"
    manifests = {m["source"]["path"].rsplit("/", 1)[-1]: m for m in read_manifests(results)}
    sentence, tone = manifests["sentence.wav"], manifests["tone.flac"]
    assert sentence["speech"]["speech_ratio"] > 0.5
    assert tone["speech"] == {"speech_ratio": 0.0, "speech_seconds": 0, "segment_count": 0,
                              "segments": [], "first_speech_s": None, "last_speech_s": None}
    assert sentence["extractors"]["speech"]["params_hash"]
    assert 1 < sentence["speech_quality"]["ovrl_mos"] < 5
    assert sentence["speech_quality"]["segments"] >= 1
    assert 70 < sentence["pitch"]["f0_median_hz"] < 200 and tone["pitch"]["voiced_ratio"] > 0.9
    assert abs(tone["pitch"]["f0_median_hz"] - 440) < 5  # make_audio's tone
    assert int(np.argmax(tone["spectral"]["chroma"]["median"])) == 9  # A, from C
    assert sentence["spectral"]["onsets"] >= 3 and sentence["spectral"]["zcr"]["mean"] > 0
    assert list(dataset_manifests(results / "dataset")) == read_manifests(results)
    matrix = np.load(results / "speaker_embeddings.npy")
    order = [m["source"]["path"].rsplit("/", 1)[-1] for m in read_manifests(results)]
    for name, manifest in manifests.items():
        embedding = manifest["speaker"]["embedding"]
        row = matrix[order.index(name)]
        assert np.array_equal(row, np.zeros(256, np.float32) if embedding is None else np.float32(embedding))
    assert sentence["speaker"]["partials"] >= 1 and not (results / "embeddings.npy").exists()
