"""The spectral descriptors against librosa's own calls on real recordings (within the tolerances stated in
docs/benchmarks.md), each numba kernel against its numpy reference, and the same numbers however a long file is
read."""
from __future__ import annotations

import numpy as np
import pytest

from audiofeat.dsp import _descriptor_kernels as kernels
from audiofeat.dsp.descriptors import SHAPE_ROWS, contrast_bands, spectral_summary
from audiofeat.dsp.rhythm import tempogram_mean
from audiofeat.dsp.spectrum import STAT_NAMES
from audiofeat.inputs.wav import WavReader, read_wav

from test_speech import _decoded

SR = 48000


def _librosa(y: np.ndarray) -> dict:
    """librosa's own calls (one magnitude STFT passed as S, chroma at tuning 0), rows of STAT_NAMES."""
    import librosa

    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    frames = {"centroid_hz": librosa.feature.spectral_centroid(S=S, sr=SR),
              "bandwidth_hz": librosa.feature.spectral_bandwidth(S=S, sr=SR),
              "rolloff_hz": librosa.feature.spectral_rolloff(S=S, sr=SR),
              "flatness": librosa.feature.spectral_flatness(S=S), "rms": librosa.feature.rms(y=y),
              "zcr": librosa.feature.zero_crossing_rate(y),
              "contrast_db": librosa.feature.spectral_contrast(S=S, sr=SR),
              "chroma": librosa.feature.chroma_stft(S=S ** 2, sr=SR, tuning=0.0)}
    out = {name: np.column_stack([X.mean(1), X.std(1), X.min(1), X.max(1),
                                  *np.percentile(X.astype(np.float64), [10, 25, 50, 75, 90], axis=1)])
           for name, X in frames.items()}
    # A band whose valley sits 120 dB or more under the frame's peak (the empty top band of a file upsampled
    # to 48 kHz) averages the float32 STFT's rounding noise, which differs between FFT libraries.
    bands = contrast_bands(sr=SR, n_fft=2048)
    peak = S.max(axis=0) + 1e-30
    out["valley_at_rounding_noise"] = np.array([
        np.median(np.sort(S[lo:hi], axis=0)[:take].mean(axis=0) / peak) < 1e-6
        for lo, hi, take in zip(bands.lo, bands.hi, bands.take)])
    envelope = librosa.onset.onset_strength(y=y, sr=SR)
    out["envelope"] = envelope
    out["onsets"] = len(librosa.onset.onset_detect(onset_envelope=envelope, sr=SR))
    out["tempo_bpm"] = float(librosa.feature.tempo(onset_envelope=envelope, sr=SR)[0])
    return out


def _table(summary: dict, name: str) -> np.ndarray:
    return np.column_stack([np.atleast_1d(summary[name][stat]) for stat in STAT_NAMES])


@pytest.fixture(scope="module")
def decoded(espeak_wav, real_recordings, tmp_path_factory):
    return _decoded([espeak_wav, *real_recordings[:12]], tmp_path_factory.mktemp("spectral"))


def test_spectral_summary_is_librosas_own_on_speech_and_real_recordings(decoded):
    for record in decoded:
        y, _ = read_wav(record.wav)
        ours, theirs = spectral_summary(y, sr=SR), _librosa(y)
        assert ours["n_frames"] == theirs["envelope"].shape[0]
        for name in ("centroid_hz", "bandwidth_hz", "rms"):
            np.testing.assert_allclose(_table(ours, name), theirs[name], rtol=1e-4, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(_table(ours, "flatness"), theirs["flatness"], rtol=5e-4, atol=1e-8)
        np.testing.assert_allclose(_table(ours, "rolloff_hz"), theirs["rolloff_hz"], atol=SR / 2048)  # a bin
        np.testing.assert_allclose(_table(ours, "zcr"), theirs["zcr"], atol=1e-9)
        contrast = np.abs(_table(ours, "contrast_db") - theirs["contrast_db"])
        noise = theirs["valley_at_rounding_noise"]
        assert contrast[~noise, 0].max() < 1e-3 and contrast[~noise].max() < 0.05, (record.path, contrast.max())
        assert contrast[noise, 0].max(initial=0.0) < 0.2, record.path  # two float32 FFTs' rounding noise
        np.testing.assert_allclose(_table(ours, "chroma"), theirs["chroma"], atol=1e-5)
        assert (ours["onsets"], ours["tempo_bpm"]) == (theirs["onsets"], theirs["tempo_bpm"]), record.path
        assert ours["onset_rate_hz"] == pytest.approx(ours["onsets"] / (y.shape[0] / SR))


def test_the_onset_envelope_and_tempogram_are_librosas(decoded):
    import librosa

    from audiofeat.dsp.rhythm import onset_envelope
    from audiofeat.dsp.summary import FrameSpool

    y, _ = read_wav(decoded[0].wav)
    y = np.concatenate([y, y[::-1], y])  # long enough for several 8 s tempogram windows
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR), top_db=None).astype(np.float32)
    with FrameSpool(mel.shape[0]) as spool:
        for first in range(0, mel.shape[1], 300):
            spool.append(mel[:, first:first + 300])
        envelope = onset_envelope(spool, floor=float(mel.max()) - 80.0, delay=3)
    reference = librosa.onset.onset_strength(y=y, sr=SR)
    np.testing.assert_allclose(envelope, reference, rtol=1e-4, atol=1e-4 * reference.max())
    expected = librosa.feature.tempogram(onset_envelope=reference, sr=SR, win_length=750).mean(axis=1)
    np.testing.assert_allclose(tempogram_mean(reference, win_length=750), expected, rtol=1e-9, atol=1e-12)


def test_a_long_file_read_in_spans_gives_the_arrays_numbers(decoded, tmp_path, monkeypatch):
    from audiofeat.dsp import spectrum
    from audiofeat.inputs.wav import write_wav

    y = np.concatenate([read_wav(record.wav)[0] for record in decoded[:4]])
    whole = spectral_summary(y, sr=SR)
    path = tmp_path / "long.wav"
    write_wav(path, [y], sr=SR)
    monkeypatch.setattr(spectrum, "SPAN_FRAMES", 200)  # spans that cut the 64-frame FFT blocks unevenly
    with WavReader(path) as reader:
        assert spectral_summary(reader, sr=SR) == whole


def test_silence_and_a_short_click_have_no_tempo_and_finite_numbers():
    silence = spectral_summary(np.zeros(SR, np.float32), sr=SR)
    assert silence["onsets"] == 0 and silence["tempo_bpm"] is None
    assert silence["centroid_hz"]["max"] == 0.0 and silence["rms"]["max"] == 0.0
    click = np.zeros(700, np.float32)
    click[300] = 0.9
    short = spectral_summary(click, sr=SR)
    assert short["n_frames"] == 2 and all(np.isfinite(_table(short, name)).all() for name in SHAPE_ROWS)


def test_kernels_equal_their_numpy_references():
    rng = np.random.default_rng(7)
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    mag = np.abs(rng.standard_normal((1025, 64))).astype(np.float32) ** 3
    mag[:, 5] = 0.0  # a silent frame
    out = np.zeros((40, 100), np.float32)
    kernels._shape_descriptors(mag, 64, freqs, 0.85, out, 10)
    for row, reference in enumerate(kernels._shape_descriptors_ref(mag, freqs, 0.85)):
        np.testing.assert_allclose(out[row, 10:74], reference, rtol=1e-5)
    power = mag ** 2
    floored = np.maximum(power, np.float32(1e-10))
    kernels._flatness(floored, np.log(floored), 64, out, 3, 10)
    np.testing.assert_allclose(out[3, 10:74], kernels._flatness_ref(power), rtol=1e-5)
    bands = contrast_bands(sr=SR, n_fft=2048)
    kernels._contrast_bands(mag, 64, bands.lo, bands.hi, bands.take, out, 6, 13, 10)
    peak, valley = kernels._contrast_bands_ref(mag, bands.lo, bands.hi, bands.take)
    np.testing.assert_allclose(out[6:13, 10:74], peak, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[13:20, 10:74], valley, rtol=1e-5, atol=1e-4)
    fb = np.abs(rng.standard_normal((12, 1025))).astype(np.float32)
    kernels._chroma_from_power(64, fb, power, np.empty((12, 64), np.float32), out, 20, 10)
    np.testing.assert_allclose(out[20:32, 10:74], kernels._chroma_from_power_ref(fb, power), rtol=1e-5)


def test_frame_kernels_equal_their_numpy_references():
    rng = np.random.default_rng(3)
    y = (rng.standard_normal(5000) * 0.3).astype(np.float32)
    y[1000:1400] = 0.0
    y[:3] = -0.5  # the edge a centred zero-crossing frame repeats
    out = np.zeros((8, 20), np.float32)
    kernels._rms_zcr(y, 0, y.shape[0], np.asarray([y[0], y[-1]]), 0, 10, 512, 2048, out, 0, 1, 0)
    rms, zcr = kernels._rms_zcr_ref(y, 2048, 512)
    np.testing.assert_allclose(out[0, :10], rms, rtol=1e-6)
    np.testing.assert_array_equal(out[1, :10], zcr.astype(np.float32))
    log_mel = rng.standard_normal((128, 50)).astype(np.float32)
    previous = rng.standard_normal(128).astype(np.float32)
    flux = np.empty(50, np.float32)
    kernels._onset_flux(log_mel, previous, flux)
    np.testing.assert_allclose(flux, kernels._onset_flux_ref(log_mel, previous), rtol=1e-5)
    padded = rng.standard_normal(900)
    window = np.hanning(750)
    frames = np.zeros((20, 1500))
    kernels._windowed_frames(padded, 7, 20, window, frames)
    np.testing.assert_array_equal(frames[:, :750], kernels._windowed_frames_ref(padded, 7, 20, window))
    lags = rng.standard_normal((20, 1500))
    lags[4] = 0.0  # a silent window: added as it is
    total = np.zeros(750)
    kernels._add_normalized(lags, 20, 750, 1 / 1500, total)
    np.testing.assert_allclose(total, kernels._add_normalized_ref(lags, 20, 750, 1 / 1500), rtol=1e-12)


def test_a_rate_whose_nyquist_is_under_contrasts_bands_is_a_config_error():
    from audiofeat.config.schema import ConfigError, validate_config
    from audiofeat.config.settings import Settings
    from audiofeat.extractors.spectral import SpectralExtractor

    def extractor(sr):
        config = validate_config({"input_dir": "x", "extractors": ["spectral"], "audio": {"target_sr": sr}})
        return SpectralExtractor.from_settings(Settings.from_config(config))

    assert extractor(16000).params.sr == 16000  # bands up to 6,400 Hz fit under 8 kHz
    with pytest.raises(ConfigError, match="spectral contrast: band edge 6400 Hz is not below the Nyquist frequency: set audio.target_sr"):
        extractor(12000)


def test_memory_follows_a_span_of_frames_not_the_file(monkeypatch):
    """Thirty minutes read through a reader, the spools' in-memory part cut to 1 MB: the per-frame values (160
    rows, 108 MB here) go to their files; what stays is a span's samples (8 MB at hop 512) and its frames.
    Measured with tracemalloc (numpy's buffers), after a first call has built the FFT plans: a job's peak RSS
    also counts numba compiling the kernels when its cache is cold, as in a fresh clone's first job (5 s of
    audio in a new process: 456 MB with a cold numba cache, 293 MB with a warm one)."""
    import tracemalloc

    from audiofeat.dsp import summary

    class Reader:
        def __init__(self, y):
            self.y, self.frames = y, y.shape[0]

        def read(self, start, stop):
            return self.y[start:stop].copy()

    rng = np.random.default_rng(1)
    y = (0.1 * rng.standard_normal(1800 * SR)).astype(np.float32)
    y[::SR // 2] += 0.9  # two onsets a second
    spectral_summary(Reader(y[:20 * SR]), sr=SR)
    monkeypatch.setattr(summary, "SPOOL_MEMORY_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        result = spectral_summary(Reader(y), sr=SR)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = 160 * 4 * result["n_frames"]
    assert result["onsets"] > 1800 and peak < whole / 3, (peak, whole)
