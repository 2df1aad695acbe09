"""The loudness extractor: BS.1770 loudness on every channel of the file, peaks, clipping, silence, DC and
bandwidth on signals whose values are known; against FFmpeg's ebur128 meter on real recordings and on stereo,
anti-phase stereo, 5.1 and a stereo file with one clipping channel; a run that computes only it (no torch in
any job)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from audiofeat.dsp.bs1770 import k_weighting_sos
from audiofeat.extractors.loudness import LoudnessParams, loudness_block, measure
from audiofeat.inputs.media import ffmpeg_executable, open_channels, resample
from audiofeat.testing.media import ebur128_reference, make_audio, run_ffmpeg

from conftest import created_since, read_manifests, run_snakemake, write_config

SR = 48000
PARAMS = LoudnessParams()


def _sine(amplitude: float, frequency: float = 997.0, seconds: float = 5.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * frequency * t + phase)).astype(np.float32)


def _block(x: np.ndarray, names: list[str] | None = None, sr: int = SR, chunk: int | None = None) -> dict:
    x = np.atleast_2d(x)
    step = chunk or max(1, x.shape[1])
    chunks = [x[:, i:i + step] for i in range(0, x.shape[1], step)]
    return loudness_block(measure(chunks, sr, names or ["FC"] * x.shape[0], PARAMS), sr, PARAMS)


def _file_block(path) -> dict:
    source = open_channels(str(path))
    return loudness_block(measure(source.chunks, source.facts.sample_rate, list(source.channel_names), PARAMS),
                          source.facts.sample_rate, PARAMS)


def test_k_weighting_at_48_khz_is_the_standards_table():
    sos = k_weighting_sos(48000)
    # ITU-R BS.1770-4, tables 1 and 2.
    assert np.allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241,
                                0.73248077421585], atol=1e-9)
    assert np.allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


def test_a_997_hz_sine_has_the_loudness_bs1770_gives_it_and_two_channels_sum_their_energies():
    block = _block(_sine(0.5))
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS; half its amplitude 6.02 dB less.
    assert block["integrated_lufs"] == pytest.approx(-3.01 - 6.02, abs=0.05)
    assert block["sample_peak_dbfs"] == pytest.approx(-6.02, abs=0.01)
    assert block["clipping_ratio"] == 0.0 and block["clipping_channel"] is None and block["silent_frame_ratio"] == 0.0
    assert abs(block["dc_offset"]) < 1e-4 and block["channels"] == 1 and block["sample_rate"] == SR
    assert block["effective_bandwidth_hz"] == pytest.approx(997, abs=60)  # nothing above the tone
    # The same sine in both channels of a stereo file: twice the energy, 3.01 LU more (a downmix reads the same).
    stereo = _block(np.stack([_sine(0.5), _sine(0.5)]), ["FL", "FR"])
    assert stereo["integrated_lufs"] == pytest.approx(block["integrated_lufs"] + 3.01, abs=0.01)
    # A surround channel weighs 1.41 (+1.49 dB); an LFE channel is left out.
    surround = _block(np.stack([_sine(0.5), _sine(0.5)]), ["FL", "SL"])
    assert surround["integrated_lufs"] == pytest.approx(block["integrated_lufs"] + 10 * np.log10(2.41), abs=0.01)
    lfe = _block(np.stack([_sine(0.5), _sine(0.9)]), ["FC", "LFE"])
    assert lfe["integrated_lufs"] == pytest.approx(block["integrated_lufs"], abs=0.01)


def test_the_meter_streamed_in_chunks_reads_what_it_reads_at_once(rng):
    x = np.stack([_sine(0.3, seconds=7.3) * np.linspace(0.1, 1, int(7.3 * SR)),
                  (0.2 * rng.standard_normal(int(7.3 * SR))).astype(np.float32)])
    whole = _block(x, ["FL", "FR"])
    for chunk in (1000, 4799, 65536):
        streamed = _block(x, ["FL", "FR"], chunk=chunk)
        assert streamed.keys() == whole.keys()
        for field, value in whole.items():
            assert streamed[field] == pytest.approx(value, abs=1e-6), (chunk, field)
    assert whole["loudness_range_lu"] > 0.5  # a rising level spreads the 3 s blocks


def test_true_peak_sees_the_peak_between_samples():
    # A quarter-rate sine sampled at 45 degrees: every sample at 0.707 of a peak that lies between them.
    block = _block(_sine(1.0, frequency=SR / 4, seconds=1.0, phase=np.pi / 4))
    assert block["sample_peak_dbfs"] == pytest.approx(-3.01, abs=0.02)
    assert block["true_peak_dbfs"] == pytest.approx(0.0, abs=0.3)


def test_clipping_silence_and_dc_offset():
    clipped = np.clip(_sine(2.0), -1.0, 1.0)  # |2 sin| >= 1 on two thirds of the cycle
    assert _block(clipped)["clipping_ratio"] == pytest.approx(2 / 3, abs=0.01)
    half_silent = np.concatenate([_sine(0.3, seconds=1.0), np.zeros(SR, np.float32)])
    assert _block(half_silent)["silent_frame_ratio"] == pytest.approx(0.5, abs=0.01)
    silence = _block(np.zeros(SR, np.float32))
    assert silence["integrated_lufs"] is None and silence["sample_peak_dbfs"] is None
    assert silence["silent_frame_ratio"] == 1.0 and silence["effective_bandwidth_hz"] == 0.0
    assert silence["peak_channel"] is None and silence["loudness_range_lu"] is None
    offset = _block(np.stack([_sine(0.2), _sine(0.2) + np.float32(0.1)]), ["FL", "FR"])
    assert offset["dc_offset"] == pytest.approx(0.1, abs=1e-4)  # the channel with the largest offset


def test_bandwidth_gives_away_audio_upsampled_from_8_khz_as_scipys_welch_finds_it(rng):
    from scipy.signal import welch

    narrow = resample((0.3 * rng.standard_normal(8000 * 3)).astype(np.float32), 8000, SR)
    wide = (0.3 * rng.standard_normal(SR * 3)).astype(np.float32)
    assert 3600 <= _block(narrow)["effective_bandwidth_hz"] <= 4100
    assert _block(wide)["effective_bandwidth_hz"] >= 23000
    for y in (narrow, narrow[:3000]):  # a whole segment, and a file shorter than one
        freqs, power = welch(y.astype(np.float64), fs=SR, window="blackmanharris", nperseg=min(4096, y.size))
        expected = freqs[np.nonzero(power >= power.max() * 1e-6)[0][-1]]
        assert _block(y, chunk=1000)["effective_bandwidth_hz"] == pytest.approx(expected, abs=0.01)


def test_real_recordings_read_as_ffmpegs_ebur128_reads_them(real_recordings):
    """Within 0.02 LU where FFmpeg decodes the same samples; where its command line decodes more (a Vorbis
    file's padding that we trim to the declared length), our meter on FFmpeg's own samples reads what it reads."""
    compared = 0
    for path in real_recordings:
        ours, reference = _file_block(path), ebur128_reference(path)
        if reference["I"] is None:  # shorter than one 400 ms block
            assert ours["integrated_lufs"] is None, path
            continue
        source = open_channels(str(path))
        decoded = subprocess.run([ffmpeg_executable(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
                                  "-"], capture_output=True, check=True).stdout
        theirs = np.frombuffer(decoded, "<f4").reshape(-1, source.facts.channels).T
        if theirs.shape[1] != sum(chunk.shape[1] for chunk in source.chunks):
            ours = _block(theirs, list(source.channel_names), sr=source.facts.sample_rate)
        assert ours["integrated_lufs"] == pytest.approx(reference["I"], abs=0.02), path
        compared += 1
    assert compared >= 20


def _ffmpeg_file(path, expression: str, layout: str, seconds: float, sr: int = 44100):
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg("-f", "lavfi", "-i", f"aevalsrc='{expression}':channel_layout={layout}:sample_rate={sr}:d={seconds}",
               "-c:a", "flac" if path.suffix == ".flac" else "pcm_s16le", "-sample_fmt", "s16", str(path))
    return path


@pytest.mark.parametrize("name, expression, layout", [
    # two different tones whose level rises: a loudness range to measure
    ("stereo", "0.1*(1+t)*sin(2*PI*440*t)|0.3*sin(2*PI*1000*t)", "stereo"),
    # the same tone in opposite phase: a downmix is silence, a meter is not
    ("anti-phase", "0.4*sin(2*PI*500*t)|-0.4*sin(2*PI*500*t)", "stereo"),
    ("5.1", "0.2*sin(2*PI*300*t)|0.2*sin(2*PI*600*t)|0.3*sin(2*PI*900*t)|0.9*sin(2*PI*50*t)"
            "|0.25*sin(2*PI*1200*t)|0.1*(1+t)*sin(2*PI*2000*t)", "5.1"),
    # the left channel hard-clips, the right is quiet: the block names the left
    ("one-clipping", "clip(3*sin(2*PI*220*t),-1,1)|0.05*sin(2*PI*330*t)", "stereo"),
])
def test_multichannel_files_read_within_0_1_lu_of_ebur128(tmp_path, name, expression, layout):
    path = _ffmpeg_file(tmp_path / f"{name}.wav", expression, layout, seconds=8)
    ours, reference = _file_block(path), ebur128_reference(path)
    assert ours["integrated_lufs"] == pytest.approx(reference["I"], abs=0.1)
    assert ours["loudness_range_lu"] == pytest.approx(reference["LRA"], abs=0.1)
    assert ours["true_peak_dbfs"] == pytest.approx(max(p for p in reference["true_peaks"] if p is not None), abs=0.5)
    assert ours["channels"] == (6 if layout == "5.1" else 2)
    if name == "one-clipping":
        assert ours["clipping_channel"] == 0 and ours["clipping_ratio"] > 0.5 and ours["peak_channel"] == 0
    if name == "anti-phase":
        assert ours["silent_frame_ratio"] == 0.0 and ours["integrated_lufs"] > -12


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


def test_a_stereo_file_is_measured_on_its_channels_in_a_run_and_a_loudness_bump_recomputes_loudness_only(tmp_path):
    import time

    from conftest import bumped_copy

    media = tmp_path / "media"
    stereo = _ffmpeg_file(media / "stereo.flac", "clip(3*sin(2*PI*220*t),-1,1)|0.05*sin(2*PI*330*t)", "stereo", 4)
    make_audio(media / "mono.wav", seconds=3.0, sr=16000, source="noise")
    base = dict(input_dir=str(media), extractors=["features", "loudness"], cache={"dir": str(tmp_path / "cache")})
    run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", **base))
    manifests = {r["source"]["path"].rsplit("/", 1)[-1]: r for r in read_manifests(tmp_path / "results")}
    block = manifests["stereo.flac"]["loudness"]
    assert block["channels"] == 2 and block["clipping_channel"] == 0 and block["clipping_ratio"] > 0.5
    assert block["integrated_lufs"] == pytest.approx(ebur128_reference(stereo)["I"], abs=0.1)
    assert block["sample_rate"] == 44100 and manifests["mono.wav"]["loudness"]["sample_rate"] == 16000
    copy = bumped_copy(tmp_path, "loudness", 'version = "2"  # bump', 'version = "3"  # bump')
    started = time.time()
    run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", **base), snakefile=copy / "Snakefile",
                  env={"PYTHONPATH": str(copy)})
    assert created_since(tmp_path / "cache", started) == {"loudness": 2}
    versions = {r["extractors"]["loudness"]["version"] for r in read_manifests(tmp_path / "results")}
    assert versions == {"3"}
