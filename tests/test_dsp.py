"""The feature core against librosa (the reference) and against its own plain-numpy kernels."""
import librosa
import soundfile as sf
import numpy as np
import pytest

from audiofeat import dsp
from audiofeat.dsp import _kernels
from audiofeat.dsp import spectrum as transforms

PARAM_SETS = [
    pytest.param(dict(dsp.PRESETS["librosa"]), id="librosa-mfcc-defaults"),
    pytest.param(dict(dsp.PRESETS["clap"]), id="clap-htsat"),
    pytest.param(dict(n_fft=512, hop_length=160, n_mels=40, n_mfcc=13, fmin=20.0, fmax=7600.0), id="speech-512"),
    pytest.param(dict(n_fft=400, hop_length=100, n_mels=80, n_mfcc=30, fmin=0.0, fmax=None), id="odd-n_fft-400"),
]


def _load(path, sr=48000):
    y, _ = librosa.load(str(path), sr=sr, mono=True)
    return y.astype(np.float32)


def _signals(real_recordings, espeak_wav, rng):
    sr = 48000
    t = np.arange(int(1.5 * sr)) / sr
    yield "speech", _load(espeak_wav)
    for path in real_recordings[:3]:
        yield path.name, _load(path)
    yield "noise", (0.2 * rng.standard_normal(sr)).astype(np.float32)
    yield "tone", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    yield "silence", np.zeros(sr // 2, dtype=np.float32)
    yield "shorter-than-a-frame", (0.1 * rng.standard_normal(300)).astype(np.float32)
    for frames in (3, 4, 8):  # the reduced-width delta of short inputs
        yield f"{frames}-frames", (0.1 * rng.standard_normal(480 * (frames - 1))).astype(np.float32)


def _mel_kwargs(params):
    return {k: params[k] for k in ("n_fft", "hop_length", "n_mels", "fmin", "fmax")}


@pytest.mark.parametrize("params", PARAM_SETS)
def test_logmel_and_mfcc_match_librosa(params, real_recordings, espeak_wav, rng):
    sr = 48000
    for name, y in _signals(real_recordings, espeak_wav, rng):
        expected_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, **_mel_kwargs(params)))
        got_mel = dsp.power_to_db(dsp.melspectrogram(y, sr=sr, **_mel_kwargs(params)))
        assert got_mel.shape == expected_mel.shape, name
        assert np.abs(got_mel - expected_mel).max() <= 0.01, name  # floor bins (max - 80 dB) included
        assert np.isfinite(got_mel).all(), name

        expected = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=params["n_mfcc"], **_mel_kwargs(params))
        got = dsp.mfcc(y, sr=sr, n_mfcc=params["n_mfcc"], **_mel_kwargs(params))
        # Per coefficient: c0 (hundreds of dB) must not hide errors in c1..cN.
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-3), (name, np.abs(got - expected).max(axis=1))


@pytest.mark.parametrize("params", PARAM_SETS)
def test_summary_statistics_equal_numpy_on_librosa_arrays(params, real_recordings, espeak_wav, rng):
    sr = 48000
    for name, y in _signals(real_recordings, espeak_wav, rng):
        S = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, **_mel_kwargs(params)))
        M = librosa.feature.mfcc(S=S, n_mfcc=params["n_mfcc"])
        summary = dsp.feature_summary(y, sr=sr, **params)
        for block, X in (("mel", S), ("mfcc", M)):
            # Per coefficient, as for the frames above: c0 (hundreds) must not hide errors in c1..cN (about 10).
            tol = 1e-4 * np.abs(X).max(axis=1) + 1e-3 if block == "mfcc" else 0.01
            reference = {"mean": X.mean(1), "std": X.std(1), "min": X.min(1), "max": X.max(1),
                         "p10": np.percentile(X, 10, axis=1), "p25": np.percentile(X, 25, axis=1),
                         "median": np.median(X, axis=1), "p75": np.percentile(X, 75, axis=1),
                         "p90": np.percentile(X, 90, axis=1)}
            for stat, values in reference.items():
                assert (np.abs(np.asarray(summary[block][stat]) - values) <= tol).all(), (name, block, stat)
        n = M.shape[1]
        if n >= 3:  # width 9, or the widest odd width that fits a short input (as librosa needs)
            delta = librosa.feature.delta(M, width=min(9, n if n % 2 else n - 1))
            for stat, values in (("delta_mean", delta.mean(1)), ("delta_std", delta.std(1))):
                assert np.allclose(summary["mfcc"][stat], values, rtol=1e-4, atol=2e-3), (name, stat)
        assert all(np.isfinite(v).all() for blk in ("mel", "mfcc") for v in summary[blk].values())


def test_filters_windows_and_options_match_librosa():
    for kwargs in (dict(htk=True), dict(norm=None), dict(norm=2.0), dict(htk=True, norm=1.0, fmin=100, fmax=8000)):
        expected = librosa.filters.mel(sr=44100, n_fft=1024, n_mels=60, **kwargs)
        got = dsp.mel_filters(sr=44100, n_fft=1024, n_mels=60, **kwargs)
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-8), kwargs
    y = np.random.default_rng(0).standard_normal(20000).astype(np.float32)
    for window in ("hann", "hamming", "blackman", "boxcar", "triang"):
        for pad_mode in ("constant", "reflect", "edge"):
            expected = np.abs(librosa.stft(y, n_fft=1024, hop_length=256, window=window, pad_mode=pad_mode)) ** 2
            got = dsp.stft_power(y, n_fft=1024, hop_length=256, window=window, pad_mode=pad_mode)
            assert np.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.max()), (window, pad_mode)
    expected = np.abs(librosa.stft(y, n_fft=1024, hop_length=300, win_length=800, center=False))
    got = dsp.stft_power(y, n_fft=1024, hop_length=300, win_length=800, center=False, power=1.0)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.max())
    for size in (10, 11, 16):  # even and odd differences: the extra zero goes where librosa puts it
        data = np.arange(1, 6, dtype=np.float32)
        assert np.array_equal(dsp.pad_center(data, size), librosa.util.pad_center(data, size=size)), size
    S = np.abs(librosa.stft(y)) ** 2
    for kwargs in (dict(ref=np.max), dict(ref=3.0, amin=1e-5, top_db=None), dict(top_db=40.0)):
        assert np.allclose(dsp.power_to_db(S, **kwargs), librosa.power_to_db(S, **kwargs), atol=1e-3), kwargs


def test_delta_matches_librosa(rng):
    X = rng.standard_normal((5, 40)).cumsum(axis=1)
    for width in (3, 5, 9):
        assert np.allclose(dsp.delta(X, width=width), librosa.feature.delta(X, width=width), atol=1e-5)
    assert np.allclose(dsp.delta(X.T, axis=0), librosa.feature.delta(X.T, axis=0), atol=1e-5)
    assert np.allclose(dsp.delta(X, order=2), librosa.feature.delta(X, order=2), atol=1e-5)


def test_multichannel_input_matches_per_channel():
    y = np.random.default_rng(1).standard_normal((2, 9000)).astype(np.float32)
    both = dsp.melspectrogram(y, sr=16000)
    assert both.shape[0] == 2
    assert np.array_equal(both[1], dsp.melspectrogram(y[1], sr=16000))


def test_kernels_match_their_numpy_references(rng):
    y = rng.standard_normal(5000).astype(np.float32)
    window = np.hanning(256).astype(np.float32)
    out = np.empty((7, 256), np.float32)
    for offset, first in ((0, 3), (128, 0), (128, 45)):  # inside, and frames hanging over either end
        _kernels._frame_block(y, offset, first, 7, 100, window, out)
        assert np.allclose(out, _kernels._frame_block_ref(y, offset, first, 7, 100, window))

    spectrum = np.fft.rfft(out, axis=1).astype(np.complex64)
    for power in (1.0, 2.0):
        power_t = np.empty((129, 7), np.float32)
        _kernels._power_transposed(spectrum, 7, power, power_t)
        assert np.allclose(power_t, _kernels._power_transposed_ref(spectrum, power), rtol=1e-5)
        weights, lo, hi = transforms._sparse_filters(16000.0, 256, 20, 0.0, None, False, "slaney")
        mel = np.empty((20, 7), np.float32)
        _kernels._mel_from_power(7, weights, lo, hi, power_t, np.empty(7, np.float32), mel, 0)
        assert np.allclose(mel, _kernels._mel_from_power_ref(weights, power_t), rtol=1e-5)

    S = np.abs(rng.standard_normal((5, 40))).astype(np.float32) ** 4
    for top_db in (80.0, 10.0, -1.0):
        got = S.copy()
        _kernels._power_to_db_inplace(got, 0.5, 1e-10, top_db)
        assert np.allclose(got, _kernels._power_to_db_ref(S, 0.5, 1e-10, top_db if top_db >= 0 else None), atol=1e-4)

    q = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    floored = np.maximum(rng.standard_normal((6, 1001)), 0.3)  # most values on a floor, as a top_db'd log-mel
    floored[1] = 2.5  # a constant row
    floored[2, ::7] = np.round(floored[2, ::7], 1)  # ties off the floor
    for X in (rng.standard_normal((4, 101)), floored, floored.astype(np.float32), rng.standard_normal((3, 2))):
        stats = np.empty((X.shape[0], 9))
        _kernels._row_stats(X, q, stats)
        assert np.allclose(stats, _kernels._row_stats_ref(X, q), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_is_a_clear_value_error(bad):
    y = np.zeros(4000, np.float32)
    y[1234] = bad
    with pytest.raises(ValueError, match=r"not finite.*index 1234"):
        dsp.mfcc(y, sr=16000)
    with pytest.raises(ValueError, match="not finite"):
        dsp.feature_summary(y, sr=16000)


def test_bad_arguments_name_the_argument():
    y = np.zeros(4000, np.float32)
    with pytest.raises(ValueError, match="hop_length=0"):
        dsp.melspectrogram(y, sr=16000, hop_length=0)
    with pytest.raises(ValueError, match="win_length=4096 must not exceed n_fft=2048"):
        dsp.stft_power(y, win_length=4096)
    with pytest.raises(ValueError, match="must be floating-point"):
        dsp.mfcc(np.zeros(100, np.int16), sr=16000)


@pytest.mark.parametrize("center", [True, False])
def test_summary_read_from_a_wav_a_span_at_a_time_equals_the_whole_array(tmp_path, real_recordings, monkeypatch,
                                                                        center):
    """Spans of 70 frames (not a multiple of the FFT block) over a real recording: every statistic is the one the
    whole in-memory signal gives, to the bit."""
    from audiofeat.inputs.media import resample
    from audiofeat.inputs.wav import WavReader, read_wav, wav_bytes

    y, sr = sf.read(real_recordings[0], dtype="float32", always_2d=True)
    y = resample(y.mean(axis=1).astype(np.float32), sr, 48000)
    path = tmp_path / "x.wav"
    path.write_bytes(wav_bytes(y, 48000))
    y = read_wav(path)[0]
    whole = dsp.feature_summary(y, sr=48000, center=center)
    monkeypatch.setattr(transforms, "SPAN_FRAMES", 70)
    with WavReader(path) as reader:
        assert dsp.feature_summary(reader, sr=48000, center=center) == whole


def test_summary_of_a_recording_spilled_to_disk_in_small_chunks(monkeypatch, rng):
    """Per-frame values in a temporary file and MFCCs in chunks of 2 spans (as a recording longer than 46 min
    gets them): the log-mel statistics are the same to the bit, the MFCC ones within float32 rounding."""
    from audiofeat.dsp import summary

    y = (0.1 * rng.standard_normal(48000 * 30)).astype(np.float32)
    y[: 48000 * 5] *= 0.01  # a quiet stretch, so that the top_db floor matters
    whole = dsp.feature_summary(y, sr=48000)
    spilled = []
    monkeypatch.setattr(summary, "SPOOL_MEMORY_BYTES", 1 << 16)
    monkeypatch.setattr(summary, "MFCC_CHUNK_FRAMES", 2 * 700)
    monkeypatch.setattr(transforms, "SPAN_FRAMES", 700)
    original = summary.FrameSpool.append
    monkeypatch.setattr(summary.FrameSpool, "append",
                        lambda self, block: (original(self, block), spilled.append(self._file._rolled))[0])
    chunked = dsp.feature_summary(y, sr=48000)
    assert spilled[-1] and chunked["mel"] == whole["mel"] and chunked["n_frames"] == whole["n_frames"]
    for stat, values in whole["mfcc"].items():
        assert np.allclose(chunked["mfcc"][stat], values, rtol=1e-5, atol=1e-4), stat
