"""Benchmark scale: N paths made from M distinct clips with hard links (content dedupe computes each clip once),
run cold, with nothing to do, and after adding one file; or, with ``--long-hours H``, one H-hour recording.

Each run is a real `snakemake --profile profiles/local` run. Prints, per run, the wall time (and as a share of
the cold run) and, per rule, the summed job wall time and the largest peak RSS (the jobs' own ``getrusage``; for
finalize and the inventory, Snakemake's benchmark files), then the output sizes.

With ``--inventory-only``, only the inventory runs (``--until inventory``): cold, with nothing changed, after adding a file.
With ``--profile NAME``, ``--files`` distinct files whose durations, formats and rates are drawn from the
published shape of a dataset (:data:`PROFILES`), one cold run: files/s and audio hours/s besides the above.
``--manifests none`` runs with ``outputs.manifests: none``.

Usage: python benchmarks/bench_scale.py [--paths 100000] [--clips 1000] [--workdir DIR] [--extractors features,clap]
                                        [--inventory-only] [--manifests files|none]
       python benchmarks/bench_scale.py --long-hours 10 [--long-codec vorbis|flac] [--workdir DIR]
       python benchmarks/bench_scale.py --profile audioset|librispeech|esc50|podcast [--files N]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.testing.media import make_audio, run_ffmpeg, scratch_folder, write_tone_clips  # noqa: E402

# Durations (seconds, drawn with a generator), file name suffix, ffmpeg codec arguments, rate and channels, as the
# datasets publish them: AudioSet's 10 s YouTube excerpts (AAC; some cut short at the video's end), LibriSpeech's
# utterances (FLAC, 16 kHz mono; about 2 to 35 s, most 10 to 17 s), ESC-50's 5 s clips (WAV, 44.1 kHz mono) and
# podcast episodes (MP3, 30 to 120 minutes).
PROFILES = {
    "audioset": (lambda rng, n: np.where(rng.random(n) < 0.05, rng.uniform(2, 10, n), 10.0),
                 ".m4a", ("-c:a", "aac", "-b:a", "128k"), 44100, 2),
    "librispeech": (lambda rng, n: np.clip(rng.lognormal(np.log(14.0), 0.35, n), 2, 35),
                    ".flac", (), 16000, 1),
    "esc50": (lambda rng, n: np.full(n, 5.0), ".wav", (), 44100, 1),
    "podcast": (lambda rng, n: rng.uniform(30 * 60, 120 * 60, n), ".mp3", ("-c:a", "libmp3lame", "-b:a", "96k"),
                44100, 2),
}


def profile_set(media: Path, name: str, files: int) -> float:
    """``files`` distinct files (tones of different pitches) shaped like dataset ``name``; returns their audio
    seconds."""
    durations, suffix, codec, sr, channels = PROFILES[name]
    seconds = durations(np.random.default_rng(0), files)
    for i, duration in enumerate(seconds):
        make_audio(media / f"{i // 1000:03d}" / f"{i:06d}{suffix}", seconds=round(float(duration), 3), sr=sr,
                   channels=channels, frequency=110 + i, codec_args=codec)
    return float(seconds.sum())


def snakemake(work: Path, config: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--profile", str(REPO / "profiles" / "local"), "--cores", "2", "--configfile", str(config), *extra]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(cmd, cwd=work, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def linked_paths(media: Path, paths: int, clips: int) -> None:
    """``clips`` distinct 0.5-1.5 s clips, each hard-linked until there are ``paths`` paths."""
    originals = media / "originals"
    write_tone_clips(originals, clips, seed=0, seconds=1.0, sr=16000)
    sources = sorted(originals.iterdir())
    for i in range(paths - clips):
        folder = media / f"links{i // 10000:03d}"
        folder.mkdir(exist_ok=True)
        os.link(sources[i % clips], folder / f"{i:07d}.wav")


def long_recording(media: Path, hours: float, codec: str = "vorbis") -> None:
    """One ``hours``-long stereo 44.1 kHz file of pink noise: Vorbis, encoded whole (about 25 minutes for 10 hours
    on this machine), or FLAC, 10 minutes encoded and copied end to end (a minute)."""
    media.mkdir(parents=True, exist_ok=True)
    if codec == "vorbis":
        run_ffmpeg("-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=44100:duration={hours * 3600}:amplitude=0.3",
                   "-ac", "2", "-c:a", "libvorbis", "-q:a", "0", str(media / "long.ogg"))
        return
    piece = media.parent / "piece.flac"
    run_ffmpeg("-f", "lavfi", "-i", "anoisesrc=color=pink:sample_rate=44100:duration=600:amplitude=0.3", "-ac", "2",
               "-c:a", "flac", str(piece))
    run_ffmpeg("-stream_loop", str(max(0, round(hours * 6) - 1)), "-i", str(piece), "-c", "copy", str(media / "long.flac"))
    piece.unlink()


def job_costs(results: Path, since: float) -> dict[str, dict]:
    """Per rule, jobs finished since ``since``: summed wall seconds and the largest peak RSS (MB)."""
    costs: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "peak_rss_mb": 0.0})
    for path in (results / "bookkeeping" / "benchmarks").rglob("*.tsv"):
        if path.stat().st_mtime < since:
            continue
        rule = path.parent.name if path.parent.name != "benchmarks" else path.stem
        row = next(csv.DictReader(path.open(), delimiter="\t"))
        entry = costs[rule]
        entry["jobs"] += 1
        entry["wall_s"] += float(row["s"])
        rss = row.get("max_rss", "NA")
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], float(rss) if rss not in ("NA", "-") else 0.0)
    for path in (results / "bookkeeping" / "timings").rglob("*.json"):  # the jobs' own peaks, exact
        if path.stat().st_mtime >= since:
            profile = json.loads(path.read_text())
            rule = "decode" if profile["stage"] == "decode" else f"extract_{profile['stage']}"
            costs[rule]["peak_rss_mb"] = max(costs[rule]["peak_rss_mb"], profile["peak_rss_mb"])
    return dict(costs)


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


def report(name: str, wall: float, cold: float, costs: dict) -> None:
    print(f"\n{name}: {wall:.1f} s ({100 * wall / cold:.1f}% of cold)")
    print("| rule | jobs | job wall s | peak RSS MB |\n|---|---|---|---|")
    for rule, c in sorted(costs.items()):
        print(f"| {rule} | {c['jobs']} | {c['wall_s']:.1f} | {c['peak_rss_mb']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=100000)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--long-hours", type=float, default=0.0)
    parser.add_argument("--long-codec", choices=("vorbis", "flac"), default="vorbis")
    parser.add_argument("--extractors", default="features,clap")
    parser.add_argument("--workdir")
    parser.add_argument("--inventory-only", action="store_true")
    parser.add_argument("--manifests", choices=("files", "none"), default="files")
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    with scratch_folder(args.workdir, "bench-scale-") as work:
        work = Path(work)
        media = work / "media"
        if args.profile:
            audio_seconds = profile_set(media, args.profile, args.files)
        elif args.long_hours:
            long_recording(media, args.long_hours, args.long_codec)
        else:
            linked_paths(media, args.paths, args.clips)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "input_dir": str(media), "results_dir": "results", "cache": {"dir": str(work / "cache")},
            "extractors": args.extractors.split(","), "perf": {"threads": 2},
            "clap": {"checkpoint": "", "allow_random_weights": True}, "outputs": {"manifests": args.manifests}}))
        results = work / "results"
        what = (f"profile {args.profile}, {args.files} files, {audio_seconds / 3600:.2f} audio hours" if args.profile
                else f"{args.long_hours} h recording" if args.long_hours
                else f"{args.paths} paths from {args.clips} clips")
        print(f"# bench_scale: {what}, extractors {args.extractors}, manifests {args.manifests}")
        if args.profile:
            run_profile(work, config, results, files=args.files, audio_seconds=audio_seconds)
            return
        started = time.time()
        extra = ("--until", "inventory") if args.inventory_only else ()
        cold = snakemake(work, config, *extra)
        report("cold", cold, cold, job_costs(results, started))
        if not args.long_hours:
            started = time.time()
            report("nothing to do", snakemake(work, config, *extra), cold, job_costs(results, started))
            write_tone_clips(media / "added", 1, seed=99, seconds=1.0, sr=16000)
            started = time.time()
            report("one file added", snakemake(work, config, *extra), cold, job_costs(results, started))
        if args.inventory_only:
            return
        print_outputs(results, work / "cache", inputs=args.paths + 1 if not args.long_hours else 1,
                      contents=args.clips + 1 if not args.long_hours else 1)


def run_profile(work: Path, config: Path, results: Path, *, files: int, audio_seconds: float) -> None:
    started = time.time()
    cold = snakemake(work, config)
    print(f"\n{files / cold:.2f} files/s, {audio_seconds / 3600 / cold:.4f} audio hours/s "
          f"({audio_seconds / cold:.1f}x realtime)")
    report("cold", cold, cold, job_costs(results, started))
    print_outputs(results, work / "cache", inputs=files, contents=files)


def files_and_bytes(path: Path) -> tuple[int, int]:
    """Files under ``path`` (or 1 for a file) and their bytes."""
    if path.is_file():
        return 1, path.stat().st_size
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(sizes), sum(sizes)


def print_outputs(results: Path, store: Path, *, inputs: int, contents: int) -> None:
    """Each output's files and bytes, per input (the results) and per distinct content (the store): what a
    file-count quota and a disk see."""
    print("\n| output | files | MB | files per input | bytes per input |\n|---|---|---|---|---|")
    for name in ("manifests", "dataset", "embeddings.npy", "bookkeeping"):
        files, size = files_and_bytes(results / name)
        print(f"| {name} | {files} | {size / 1e6:.1f} | {files / inputs:.3f} | {size / inputs:,.0f} |")
    files, size = files_and_bytes(results)
    kept, kept_size = files_and_bytes(results / "bookkeeping")
    print(f"| results, but bookkeeping | {files - kept} | {(size - kept_size) / 1e6:.1f} | "
          f"{(files - kept) / inputs:.4f} | {(size - kept_size) / inputs:,.0f} |")
    print(f"| results, all | {files} | {size / 1e6:.1f} | {files / inputs:.4f} | {size / inputs:,.0f} |")
    files, size = files_and_bytes(store)
    print(f"| store ({contents} contents) | {files} | {size / 1e6:.1f} | {files / contents:.2f} per content | "
          f"{size / contents:,.0f} per content |")


if __name__ == "__main__":
    main()
