"""What a curator looks at, in a real run: the dataset's flags column under the config's thresholds, the report's
flagged files (linked to their manifests) and its histograms, and new thresholds re-judging without recomputing."""
import shutil
import time

import pyarrow.parquet as pq

from audiofeat.testing.media import make_audio, run_ffmpeg

from conftest import created_since, run_snakemake, write_config


def _flags(results) -> dict[str, list[str]]:
    table = pq.read_table(results / "dataset", columns=["path", "flags"]).to_pylist()
    return {row["path"].rsplit("/", 1)[-1]: row["flags"] for row in table}


def test_flags_follow_the_thresholds_and_the_report_lists_them_and_draws_the_distributions(espeak_wav, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(espeak_wav, media / "sentence.wav")
    run_ffmpeg("-f", "lavfi", "-i", "aevalsrc='clip(3*sin(2*PI*220*t),-1,1)|0.05*sin(2*PI*330*t)':"
               "channel_layout=stereo:sample_rate=44100:d=3", "-c:a", "flac", "-sample_fmt", "s16",
               str(media / "clipped.flac"))
    make_audio(media / "silent.wav", seconds=2.0, source="silence")
    narrow = make_audio(tmp_path / "narrow.wav", seconds=3.0, sr=8000, source="noise")
    run_ffmpeg("-i", str(narrow), "-ar", "44100", str(media / "upsampled.wav"))  # 4 kHz of content at 44.1 kHz
    base = dict(input_dir=str(media), extractors=["loudness", "speech"], cache={"dir": str(tmp_path / "cache")})
    run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", **base))
    results = tmp_path / "results"
    flags = _flags(results)
    assert flags["clipped.flac"] == ["clipped", "no speech"]
    assert flags["silent.wav"] == ["silent", "upsampled", "no speech"]  # no bandwidth at all
    assert flags["upsampled.wav"] == ["upsampled", "no speech"]
    assert "no speech" not in flags["sentence.wav"] and "clipped" not in flags["sentence.wav"]
    page = (results / "report" / "index.html").read_text(encoding="utf-8")
    assert "<h3>clipped (loudness.clipping_ratio &gt;= 0.001): 1</h3>" in page
    assert "<a href='../manifests/clipped.flac.json'>" in page and (results / "manifests" / "clipped.flac.json").exists()
    assert "<h3>no speech (speech.speech_ratio &lt; 0.01): 3</h3>" in page
    for title in ("Duration", "Integrated loudness", "Speech ratio"):
        assert f"<h3>{title}</h3><svg" in page

    started = time.time()
    run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", **base,
                                         flags={"clipping_ratio": 0.9, "no_speech_ratio": 0.0}))
    assert created_since(tmp_path / "cache", started) == {}  # judged again, nothing recomputed
    flags = _flags(results)
    assert flags["clipped.flac"] == [] and flags["upsampled.wav"] == ["upsampled"]
    assert "<h3>clipped" not in (results / "report" / "index.html").read_text(encoding="utf-8")
