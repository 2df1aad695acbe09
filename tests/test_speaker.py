"""The speaker extractor against resemblyzer's own embed_utterance(preprocess_wav(...)) on the same 16 kHz audio
(its voice encoder from its wheel, real speech and the machine's recordings), streamed in spans of any size."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from audiofeat.extractors import speech
from audiofeat.extractors.speaker import SpeakerExtractor, SpeakerParams, VoicedStream, model_digest
from audiofeat.inputs.media import resample
from audiofeat.inputs.wav import read_wav, write_wav

from test_speech import _block, _decoded

PARAMS = SpeakerParams(1.3, 0.75, model_digest())


@pytest.fixture(scope="module")
def extractor():
    return SpeakerExtractor(PARAMS, wav_params_hash=None)


def _resemblyzer(extractor, wav_path) -> np.ndarray:
    """resemblyzer's own calls on the decoded WAV resampled to 16 kHz at once."""
    from resemblyzer import preprocess_wav

    y, sr = read_wav(wav_path)
    return extractor.encoder().embed_utterance(preprocess_wav(resample(y, sr, 16000).astype(np.float32)))


def test_embeddings_are_resemblyzers_own_on_speech_and_real_recordings(extractor, espeak_wav, real_recordings,
                                                                       tmp_path):
    records = _decoded([espeak_wav, *real_recordings[:12]], tmp_path / "store")
    for record in records:
        block = _block(extractor, record)
        expected = _resemblyzer(extractor, record.wav)
        assert np.abs(np.array(block["embedding"]) - expected).max() <= 1e-5, record.path
        assert block["partials"] >= 1 and 0 < block["voiced_seconds"] <= record.duration_s
    sentence = np.array(_block(extractor, records[0])["embedding"])
    channel_names = np.array(_block(extractor, records[1])["embedding"])
    assert np.linalg.norm(sentence) == pytest.approx(1.0, abs=1e-6)
    assert sentence @ channel_names < 0.99  # two voices, two embeddings


def test_a_long_file_streamed_in_small_spans_is_embedded_as_resemblyzer_embeds_it_whole(extractor, espeak_wav,
                                                                                      tmp_path, monkeypatch):
    """Speech, long and short silences (some cut, some kept) and quiet speech (raised to -30 dBFS): many partials,
    each crossing spans, voice windows and mel frames at every edge."""
    y, sr = read_wav(_decoded([espeak_wav], tmp_path / "store")[0].wav)
    gaps = [np.zeros(int(s * sr), np.float32) for s in (0.1, 2.0, 0.25, 0.7)]
    long = np.concatenate([gaps[1], y, gaps[0], 0.05 * y, gaps[3], y[::-1], gaps[2], y, gaps[1], y[: sr // 3]])
    wav = tmp_path / "long.wav"
    write_wav(wav, [long], sr=sr)
    record = _decoded([wav], tmp_path / "store2")[0]
    expected = _resemblyzer(extractor, record.wav)
    monkeypatch.setattr(speech, "READ_SAMPLES", 1000)
    block = _block(extractor, record)
    assert block["partials"] >= 10
    assert block["voiced_seconds"] < record.duration_s - 3  # the long silences were cut, as resemblyzer cuts them
    assert np.abs(np.array(block["embedding"]) - expected).max() <= 1e-5


def test_a_silent_file_has_no_embedding(extractor, tmp_path):
    wav = tmp_path / "silence.wav"
    write_wav(wav, [np.zeros(48000 * 2, np.float32)], sr=48000)
    assert _block(extractor, _decoded([wav], tmp_path / "store")[0]) == {"embedding": None, "partials": 0,
                                                                          "voiced_seconds": 0.0}
    stream = VoicedStream(0)
    assert stream.push(np.zeros(960, np.float32)) == [] and stream.finish() == []


def test_a_20_minute_file_costs_what_a_short_one_does(tmp_path):
    """One process embeds a 2.5-minute file, then a 20-minute one: its peak RSS may not grow by the long file's
    16 kHz audio (77 MB) or anything like it (it grew by 3 to 14 MB). In one process: whole speaker jobs of the
    same 20-minute file peaked at 1,013 to 1,151 MB from run to run on a fresh clone's venv, their file-backed
    pages the same (607 MB), so a comparison of two jobs measured that variance, not the file."""
    from audiofeat.testing.media import run_ffmpeg

    for name, seconds in (("short", 150), ("long", 1200)):
        run_ffmpeg("-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=48000:duration={seconds}:amplitude=0.3",
                   "-c:a", "pcm_f32le", str(tmp_path / f"{name}.wav"))
    probe = ("import resource, sys; from audiofeat.extractors.speaker import *; from audiofeat.inputs.wav import "
             "WavReader; e = SpeakerExtractor(SpeakerParams(1.3, 0.75, model_digest()), wav_params_hash=None)\n"
             "for path in sys.argv[1:]:\n"
             "    with WavReader(path) as wav: _, partials, _ = speaker_embedding(wav, e.encoder(), e.params)\n"
             "    print(partials, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "short.wav"), str(tmp_path / "long.wav")],
                          capture_output=True, text=True, check=True)
    (short_partials, short_mb), (long_partials, long_mb) = [map(float, line.split()) for line in
                                                            done.stdout.splitlines()]
    assert long_partials > 7 * short_partials  # the long file was embedded whole
    assert long_mb < short_mb + 30, (short_mb, long_mb)
