"""Decoding: real ffmpeg-made media through both decoders, probe facts, bad inputs, awkward names."""
import os

import numpy as np
import pytest
import soundfile as sf

from audiofeat.inputs.media import DecodeError, decode_source, downmix, load_audio
from audiofeat.inputs.wav import read_wav, wav_bytes
from audiofeat.testing.media import make_audio, make_video, run_ffmpeg


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "wav_8k_mono": make_audio(d / "a.wav", seconds=1.0, sr=8000, frequency=300),
        "flac_96k_stereo": make_audio(d / "b.flac", seconds=1.0, sr=96000, channels=2, frequency=1000),
        "mp3_44k_stereo": make_audio(d / "c.mp3", seconds=1.5, sr=44100, channels=2, source="noise"),
        "ogg_48k": make_audio(d / "d.ogg", seconds=1.0, sr=48000, source="chirp", codec_args=("-c:a", "libvorbis")),
        "mp4_video": make_video(d / "e.mp4", seconds=2.0, sr=44100, channels=2),
        "mkv_video": make_video(d / "f.mkv", seconds=1.0, sr=32000, channels=1),
    }


@pytest.mark.parametrize("name", ["wav_8k_mono", "flac_96k_stereo", "mp3_44k_stereo", "ogg_48k", "mp4_video",
                                  "mkv_video"])
def test_pyav_and_ffmpeg_decoders_agree(media, name):
    probe_a, a = load_audio(str(media[name]), target_sr=48000, decoder="pyav")
    probe_b, b = load_audio(str(media[name]), target_sr=48000, decoder="ffmpeg")
    assert probe_a == probe_b
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) <= 2
    # Same native samples, same single soxr resample: equal within float rounding of the decoders.
    assert np.max(np.abs(a[:n] - b[:n])) < 1e-4
    assert a.dtype == np.float32 and np.isfinite(a).all()


def test_probe_reports_source_facts(media):
    probe, y = load_audio(str(media["flac_96k_stereo"]), target_sr=48000)
    assert (probe.sample_rate, probe.channels, probe.codec, probe.container) == (96000, 2, "flac", "flac")
    assert probe.duration_s == pytest.approx(1.0, abs=1e-3)
    assert len(y) == 48000
    probe, _ = load_audio(str(media["mp4_video"]))
    assert probe.codec == "aac" and probe.container == "mov" and probe.channels == 2
    assert probe.duration_s == pytest.approx(2.0, abs=0.05)


def test_one_resample_to_target_keeps_a_tone(media):
    import soxr

    from audiofeat.inputs.media import decode_source

    probe, y = load_audio(str(media["wav_8k_mono"]), target_sr=48000)
    _, native = decode_source(str(media["wav_8k_mono"]))
    assert np.array_equal(y, soxr.resample(native, 8000, 48000, "HQ").astype(np.float32))  # one resample, no other
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * 48000 / len(y) == pytest.approx(300, abs=2)
    _, y16 = load_audio(str(media["wav_8k_mono"]), target_sr=16000)
    assert len(y16) == 16000


def test_stereo_is_downmixed_by_channel_mean(tmp_path):
    left = 0.5 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    stereo = np.stack([left, -0.25 * np.ones(48000)], axis=1).astype(np.float32)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 48000, subtype="FLOAT")
    _, y = load_audio(str(path), target_sr=48000)
    assert np.allclose(y, stereo.mean(axis=1), atol=1e-6)


def _truncated(tmp_path, media):
    data = media["mp3_44k_stereo"].read_bytes()
    path = tmp_path / "truncated.wav"
    wav = wav_bytes(np.zeros(48000 * 4, np.float32), 48000)
    path.write_bytes(wav[: len(wav) // 4])
    return path, data


def test_bad_inputs_raise_one_line_errors(tmp_path, media):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("not audio at all\n" * 20)
    silent_video = make_video(tmp_path / "no_audio.mp4", seconds=1.0, with_audio=False)
    truncated, _ = _truncated(tmp_path, media)
    cases = {empty: "empty file", text: "not a media file", silent_video: "no audio stream",
             truncated: "truncated", tmp_path / "missing.wav": "cannot read file"}
    for decoder in ("pyav", "ffmpeg"):
        for path, cause in cases.items():
            with pytest.raises(DecodeError) as info:
                load_audio(str(path), decoder=decoder)
            message = str(info.value)
            assert cause in message, (decoder, path.name, message)
            assert "\n" not in message


def test_awkward_file_names_are_never_shell_parsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a shell would run $(touch pwned)
    for name in ("with space.wav", "quote'd \"x\".wav", "$(touch pwned).wav", "ünïcødé-日本.wav", "-dash.wav"):
        path = make_audio(tmp_path / name, seconds=0.5, sr=16000)
        for decoder in ("pyav", "ffmpeg"):
            probe, y = load_audio(str(path), target_sr=16000, decoder=decoder)
            assert len(y) == 8000 and probe.sample_rate == 16000
    assert not (tmp_path / "pwned").exists()


def test_wav_artifact_round_trip(tmp_path, rng):
    y = rng.standard_normal(1234).astype(np.float32) * 0.1
    path = tmp_path / "x.wav"
    path.write_bytes(wav_bytes(y, 48000))
    back, sr = read_wav(path)
    assert sr == 48000 and np.array_equal(back, y)


def test_short_clip_of_20_ms(tmp_path):
    path = make_audio(tmp_path / "short.wav", seconds=0.02, sr=44100)
    probe, y = load_audio(str(path), target_sr=48000)
    assert probe.duration_s == pytest.approx(0.02, abs=1e-3)
    assert abs(len(y) - 960) <= 1


def test_lavfi_helper_reports_ffmpeg_errors(tmp_path):
    with pytest.raises(RuntimeError, match="ffmpeg"):
        run_ffmpeg("-i", str(tmp_path / "nope.wav"), str(tmp_path / "out.wav"))


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("PCM_16", 2), ("PCM_32", 2), ("PCM_U8", 1)])
def test_pcm_wav_decodes_sample_exact_across_many_packets(tmp_path, rng, subtype, channels):
    # 20 s spans many of the demuxer's 64 KiB packets: every packet boundary, and the one conversion of the
    # concatenated frames, must give libsndfile's samples exactly.
    sr = 44100
    noise = np.clip(0.3 * rng.standard_normal((20 * sr + 17, channels)), -1, 1)
    path = tmp_path / f"{subtype}_{channels}.wav"
    sf.write(path, noise, sr, subtype=subtype)
    probe, y = decode_source(str(path))
    samples = sf.read(path, dtype="float32")[0].reshape(-1, channels)
    expected = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    assert (probe.sample_rate, probe.channels) == (sr, channels)
    assert y.dtype == np.float32 and np.array_equal(y, expected)


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_downmix_is_the_float64_channel_mean_to_the_bit(rng, channels):
    interleaved = (rng.standard_normal((4801, channels)) * [10.0 ** -k for k in range(channels)]).astype(np.float32)
    for samples in (interleaved.T, np.ascontiguousarray(interleaved.T)):  # as packed and as planar frames arrive
        expected = samples.mean(axis=0, dtype=np.float64).astype(np.float32)
        assert np.array_equal(downmix(samples), expected)


def test_wav_subtype_stores_smaller_wavs_under_their_own_key(tmp_path):
    import audiofeat

    clip = make_audio(tmp_path / "tone.flac", seconds=2.0, sr=44100, source="chirp")
    runs = {subtype: audiofeat.extract([clip], extractors=["features"], cache={"dir": str(tmp_path / "cache")},
                                       audio={"wav_subtype": subtype})
            for subtype in ("float32", "int24", "int16")}
    wavs = {s: r.manifests[0].audio.wav for s, r in runs.items()}
    assert len(set(wavs.values())) == 3  # one store, three keys
    assert {s: sf.info(w).subtype for s, w in wavs.items()} == {"float32": "FLOAT", "int24": "PCM_24",
                                                                "int16": "PCM_16"}
    sizes = {s: os.path.getsize(w) for s, w in wavs.items()}
    assert sizes["int16"] < 0.51 * sizes["float32"] and sizes["int24"] < 0.76 * sizes["float32"]
    reference = runs["float32"].manifests[0].blocks["features"]["mfcc"]["mean"]
    for subtype in ("int24", "int16"):  # the same audio, quantised: the statistics barely move
        got = runs[subtype].manifests[0].blocks["features"]["mfcc"]["mean"]
        assert 0 < np.abs(np.subtract(got, reference)).max() < 0.05


def _without_peak_time(wav: bytes) -> bytes:
    """A WAV's bytes with the time stamp of libsndfile's PEAK chunk (float WAVs) zeroed: two writes of the same
    samples a second apart differ there, and only there."""
    at = wav.find(b"PEAK")
    return wav if at < 0 else wav[:at + 12] + b"\0\0\0\0" + wav[at + 16:]


def _streamed_wav(path, tmp_path, *, decoder="pyav", target_sr=48000, subtype="float32") -> bytes:
    from audiofeat.inputs.media import open_source, resampled
    from audiofeat.inputs.wav import write_wav

    source = open_source(str(path), decoder=decoder)
    out = tmp_path / f"streamed-{path.stem}-{decoder}.wav"
    write_wav(out, resampled(source.chunks, source.facts.sample_rate, target_sr), sr=target_sr, subtype=subtype)
    return out.read_bytes()


@pytest.mark.parametrize("name", ["wav_8k_mono", "flac_96k_stereo", "mp3_44k_stereo", "ogg_48k", "mp4_video"])
@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_streamed_wav_is_the_one_shot_wav_to_the_byte(media, tmp_path, monkeypatch, name, decoder):
    """Decoding, resampling and writing in small odd-sized chunks gives the bytes that one whole-file decode,
    one soxr call and one WAV write give (every chunk boundary, the AAC tail trim and the resampler's state)."""
    import soxr

    from audiofeat.inputs import media as decode

    whole_probe, whole = decode_source(str(media[name]), decoder=decoder)
    one_shot = wav_bytes(soxr.resample(whole, whole_probe.sample_rate, 48000, "HQ").astype(np.float32), 48000)
    monkeypatch.setattr(decode, "CHUNK_SAMPLES", 1001)
    assert _without_peak_time(_streamed_wav(media[name], tmp_path, decoder=decoder)) == _without_peak_time(one_shot)
    chunked_probe, chunked = decode_source(str(media[name]), decoder=decoder)
    assert chunked_probe == whole_probe and np.array_equal(chunked, whole)


def test_wav_longer_than_riff_allows_is_written_as_rf64_with_the_same_samples(media, tmp_path, monkeypatch):
    from audiofeat.inputs import media as decode, wav

    expected = load_audio(str(media["mp3_44k_stereo"]), target_sr=48000)[1]
    monkeypatch.setattr(decode, "CHUNK_SAMPLES", 4096)
    monkeypatch.setattr(wav, "RIFF_DATA_LIMIT", 100_000)  # 4 GiB in real life: these 1.5 s pass it
    path = tmp_path / "long.wav"
    path.write_bytes(_streamed_wav(media["mp3_44k_stereo"], tmp_path, subtype="int24"))
    assert sf.info(str(path)).format == "RF64"
    back, sr = read_wav(path)
    assert sr == 48000 and np.abs(back - expected).max() < 2 ** -22  # int24's step: nothing lost in the switch


def test_a_wav_header_claiming_hours_decodes_what_is_there_in_bounded_memory(tmp_path):
    """The RIFF and data sizes say 6 hours; the file holds 1 s. Memory follows the samples decoded."""
    import struct
    import tracemalloc

    path = tmp_path / "liar.wav"
    data = wav_bytes(np.zeros(48000, np.float32), 48000)
    claimed = 6 * 3600 * 48000 * 4
    data = data[:4] + struct.pack("<I", claimed + len(data) - 8) + data[8:]
    at = data.index(b"data")
    path.write_bytes(data[:at + 4] + struct.pack("<I", claimed) + data[at + 8:])
    tracemalloc.start()
    probe, y = load_audio(str(path), target_sr=48000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert probe.duration_s == 1.0 and y.shape == (48000,)
    assert peak < 64 * 2 ** 20, peak  # 6 hours as float32 would be 4 GB


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_of_two_audio_streams_the_first_is_decoded(tmp_path, decoder):
    """A container with two audio tracks (a film's languages, a commentary): the first is the input's audio."""
    path = tmp_path / "two tracks.mkv"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
               "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=22050:duration=2",
               "-map", "0:a", "-map", "1:a", "-c:a", "flac", str(path))
    facts, y = load_audio(str(path), target_sr=48000, decoder=decoder)
    assert facts.sample_rate == 44100 and len(y) == pytest.approx(48000, abs=480)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.fft.rfftfreq(len(y), 1 / 48000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_an_input_longer_than_max_hours_is_its_verdict_by_header_or_while_decoding(tmp_path):
    """The limit (here 2 s) from the header in the inventory; and where the header declares no duration (Matroska
    written to a pipe), while decoding, before the WAV is stored."""
    import subprocess

    from audiofeat.inputs.media import ffmpeg_executable
    from conftest import read_manifests, run_snakemake, write_config

    media = tmp_path / "media"
    make_audio(media / "short.flac", seconds=1.0, sr=16000)
    make_audio(media / "declared.flac", seconds=3.0, sr=16000)
    with open(media / "undeclared.mka", "wb") as out:  # a pipe: the muxer cannot go back to write the duration
        subprocess.run([ffmpeg_executable(), "-loglevel", "error", "-f", "lavfi", "-i",
                        "sine=frequency=300:sample_rate=16000:duration=3", "-c:a", "flac", "-f", "matroska", "-"],
                       stdout=out, check=True)
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results", extractors=["loudness"],
                          cache={"dir": str(tmp_path / "cache")}, audio={"max_hours": 2 / 3600})
    run_snakemake(tmp_path, config)
    errors = {m["source"]["path"].rsplit("/", 1)[1]: m.get("error") for m in read_manifests(tmp_path / "results")}
    assert errors["short.flac"] is None
    assert errors["declared.flac"] == "longer than audio.max_hours (0.000555556 h): 0.000833 h declared"
    assert errors["undeclared.mka"] == \
        "decode: longer than audio.max_hours: decoding went past the limit (its header declared less)"
    assert not list((tmp_path / "cache" / "artifacts" / "decode_verdict").rglob("*"))  # not stored: not in the key
    # Without the limit, the same files decode: the verdict was not kept.
    run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                                         extractors=["loudness"], cache={"dir": str(tmp_path / "cache")},
                                         audio={"max_hours": 0}))
    assert all(m["status"] == "ok" for m in read_manifests(tmp_path / "results"))
