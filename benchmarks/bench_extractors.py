"""Benchmark every extractor on the same real recordings: times realtime per core and each one's share of a run.

The recordings are the Debian sound files the tests use (mono and stereo, 8 to 96 kHz, Vorbis and WAV), a
synthesised sentence (espeak-ng) and a 10-minute stereo MP3 of one of them looped (a podcast-like file). Each
extractor runs alone on one thread (torch too) over the decoded files, as a shard job would, against an empty
store, three times; the median is reported. ``decode`` is the decode stage (to the 48 kHz mono WAV); for
``loudness``, which decodes the input again on every channel at its own rate, the table splits its time into that
decode and the meter.

Usage: python benchmarks/bench_extractors.py
       [--extractors decode,features,clap,loudness,speech,speech_quality,pitch,speaker,spectral]
       [--repeats 3]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.extractors import build_extractors, section_schemas  # noqa: E402
from audiofeat.extractors.decode import DecodeExtractor  # noqa: E402
from audiofeat.extractors.loudness import LoudnessParams, measure  # noqa: E402
from audiofeat.extractors.profiling import JobProfile  # noqa: E402
from audiofeat.inputs.inventory import InputFile, identify_inputs  # noqa: E402
from audiofeat.inputs.media import open_channels  # noqa: E402
from audiofeat.config.settings import load_settings  # noqa: E402
from audiofeat.store.artifacts import ArtifactStore  # noqa: E402
from audiofeat.testing.media import run_ffmpeg, spoken_sentence  # noqa: E402

RECORDINGS = sorted(Path("/usr/share/sounds/alsa").glob("*.wav")) + sorted(
    Path("/usr/share/sounds/freedesktop/stereo").glob("*.oga"))


def recordings(folder: Path) -> list[Path]:
    """The real recordings, a sentence and a 10-minute stereo MP3 of one of them looped."""
    files = list(RECORDINGS) + [p for p in [spoken_sentence(folder / "sentence.wav")] if p]
    long = folder / "podcast.mp3"
    looped = Path("/usr/share/sounds/freedesktop/stereo/alarm-clock-elapsed.oga")  # 6 s of stereo
    run_ffmpeg("-stream_loop", "-1", "-i", str(looped), "-t", "600", "-ac", "2", "-ar", "44100", "-c:a",
               "libmp3lame", "-b:a", "128k", str(long))
    return [*files, long]


def _row(record: InputFile) -> dict:
    return {"path": record.path, "content_key": record.content_key, "stat": record.stat}


def time_decode(settings, rows: list[dict], folder: Path) -> float:
    decoder = DecodeExtractor.from_settings(settings)
    store = ArtifactStore(str(Path(tempfile.mkdtemp(dir=folder))))
    started = time.perf_counter()
    for row in rows:
        decoder.decode(row, store, JobProfile("decode", "bench"))
    return time.perf_counter() - started


def time_extractor(extractor, decoded, rows: list[dict]) -> float:
    extractor.use_sources({row["content_key"]: row for row in rows})
    started = time.perf_counter()
    for _file, result in extractor.compute(decoded, threads=1, profile=JobProfile(extractor.name, "bench")):
        if isinstance(result, BaseException):
            raise result
    return time.perf_counter() - started


def time_loudness_parts(rows: list[dict]) -> tuple[float, float]:
    """Seconds decoding every channel at the file's rate, and seconds metering the decoded chunks."""
    decode = meter = 0.0
    for row in rows:
        started = time.perf_counter()
        source = open_channels(row["path"])
        chunks = list(source.chunks)
        decode += time.perf_counter() - started
        started = time.perf_counter()
        measure(chunks, source.facts.sample_rate, list(source.channel_names), LoudnessParams())
        meter += time.perf_counter() - started
    return decode, meter


def loudness_parity(rows: list[dict], decoded) -> None:
    """Integrated loudness against FFmpeg's ebur128 on each recording: ours on the file (every channel at its own
    rate) and the same meter on the decoded 48 kHz mono WAV (what version 1 measured, through pyloudnorm)."""
    from audiofeat.inputs.wav import read_wav
    from audiofeat.testing.media import ebur128_reference

    print("\n| recording | channels, rate | ebur128 LUFS | ours on the file | on the mono WAV |")
    print("|---|---|---|---|---|")
    worst = {"file": 0.0, "wav": 0.0}
    for row, record in zip(rows, decoded):
        source = open_channels(row["path"])
        ours = measure(source.chunks, source.facts.sample_rate, list(source.channel_names), LoudnessParams())
        y, sr = read_wav(record.wav)
        mono = measure((y[None, i:i + (1 << 18)] for i in range(0, y.size, 1 << 18)), sr, ["FC"], LoudnessParams())
        reference = ebur128_reference(row["path"])["I"]
        if reference is None:
            continue
        cells = []
        for name, value in (("file", ours.integrated_lufs), ("wav", mono.integrated_lufs)):
            worst[name] = max(worst[name], abs(value - reference))
            cells.append(f"{value:.3f} ({value - reference:+.3f})")
        print(f"| {Path(row['path']).name} | {source.facts.channels}, {source.facts.sample_rate} | {reference:.3f} | "
              f"{cells[0]} | {cells[1]} |")
    print(f"\nlargest difference to ebur128: on the file {worst['file']:.3f} LU, on the mono WAV {worst['wav']:.3f} LU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractors",
                        default="decode,features,clap,loudness,speech,speech_quality,pitch,speaker,spectral")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    names = [n for n in args.extractors.split(",") if n != "decode"]
    with tempfile.TemporaryDirectory(prefix="bench-extractors-") as tmp:
        folder = Path(tmp)
        files = recordings(folder)
        settings = load_settings(overrides={"extractors": names, "cache": {"dir": str(folder / "cache")},
                                            "clap": {"checkpoint": "", "allow_random_weights": True}},
                                 sections=section_schemas())
        identified = identify_inputs([(str(p), p.name) for p in files], None)
        rows = list({r.content_key: _row(r) for r in identified}.values())  # a content once, as a shard has it
        store = ArtifactStore(str(folder / "decoded"))
        decoder = DecodeExtractor.from_settings(settings)
        decoded = [decoder.decode(row, store, JobProfile("decode", "bench"))[0] for row in rows]
        audio = sum(d.duration_s for d in decoded if d.ok)
        extractors = build_extractors(settings, job=True)
        seconds = {}
        if "decode" in args.extractors.split(","):
            seconds["decode"] = statistics.median(time_decode(settings, rows, folder) for _ in range(args.repeats))
        for name in names:
            seconds[name] = statistics.median(time_extractor(extractors[name], decoded, rows)
                                              for _ in range(args.repeats))
        print(f"# bench_extractors: {len(files)} recordings, {audio / 60:.1f} audio minutes, one thread each, "
              f"median of {args.repeats}")
        print("| extractor | seconds | times realtime per core | share of a run |")
        print("|---|---|---|---|")
        total = sum(seconds.values())
        for name, value in seconds.items():
            print(f"| {name} | {value:.2f} | {audio / value:.0f}x | {100 * value / total:.0f}% |")
        if "loudness" in names:
            decode, meter = time_loudness_parts(rows)
            loudness_parity(rows, decoded)
            print(f"\nloudness: decoding every channel at the file's rate {decode:.2f} s ({audio / decode:.0f}x), "
                  f"the meter {meter:.2f} s ({audio / meter:.0f}x)")


if __name__ == "__main__":
    main()
