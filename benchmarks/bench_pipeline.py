"""Benchmark the pipeline's plumbing: decode cost per file, per-file orchestration overhead, DAG time.

1. Decode + downmix + resample to 48 kHz per short clip, per small video and per long WAV recording, PyAV
   in-process vs the ffmpeg command line (median over the files, warm).
2. Orchestration overhead on N tiny inputs (default 2,000): a full `snakemake` run whose artifacts are all in
   the store already (fresh results folder, warm cache), so every job runs but computes nothing: inventory,
   shard jobs, manifests, report. Divided by N.
3. Dry-run DAG time for M inputs (default 10,000), once the inventory exists.

Usage: python benchmarks/bench_pipeline.py [--tiny 2000] [--dag 10000] [--workdir DIR] [--target-files N] [--decode-only]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.inputs.media import load_audio  # noqa: E402
from audiofeat.testing.media import make_audio, make_video, scratch_folder  # noqa: E402


def tiny_inputs(folder: Path, count: int, seconds: float = 0.2) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sub = folder / f"d{i // 500:03d}"
        sub.mkdir(exist_ok=True)
        y = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        sf.write(sub / f"t{i:06d}.wav", y, 16000, subtype="PCM_16")


def snakemake(workdir: Path, config: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--profile", str(REPO / "profiles" / "local"), "--configfile", str(config), "--quiet", "all", *extra]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def write_config(path: Path, **values) -> Path:
    import yaml

    base = {"clap": {"checkpoint": "", "allow_random_weights": True}}
    base.update(values)
    path.write_text(yaml.safe_dump(base))
    return path


def bench_decode(tmp: Path) -> list[tuple]:
    clips = [make_audio(tmp / f"clip{i}.ogg", seconds=2.0, sr=44100, source="chirp",
                        codec_args=("-c:a", "libvorbis")) for i in range(10)]
    clips += [make_audio(tmp / f"clip{i}.wav", seconds=2.0, sr=22050) for i in range(10)]
    videos = [make_video(tmp / f"v{i}.mp4", seconds=3.0) for i in range(5)]
    videos += [make_video(tmp / f"v{i}.webm", seconds=3.0, sr=48000, codec_args=("-c:a", "libopus"))
               for i in range(5)]
    recordings = [make_audio(tmp / f"long{i}.wav", seconds=120.0, sr=48000, channels=2, source="noise")
                  for i in range(4)]
    rows = []
    for label, files in (("short clip (2 s ogg/wav)", clips), ("small video (3 s mp4/webm)", videos),
                         ("long recording (120 s stereo wav)", recordings)):
        for decoder in ("pyav", "ffmpeg"):
            for f in files[:2]:
                load_audio(str(f), decoder=decoder)  # warm
            times = []
            for f in files:
                started = time.perf_counter()
                load_audio(str(f), decoder=decoder)
                times.append(time.perf_counter() - started)
            rows.append((label, decoder, statistics.median(times) * 1000))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=int, default=2000)
    parser.add_argument("--dag", type=int, default=10000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--target-files", type=int, default=None, help="shard.target_files (default: config's)")
    parser.add_argument("--decode-only", action="store_true", help="part 1 only")
    args = parser.parse_args()
    with scratch_folder(args.workdir, "audiofeat-bench-") as root:
        run(args, root)


def run(args: argparse.Namespace, root: Path) -> None:
    print("decode + downmix + resample to 48 kHz, median per file (warm):")
    print("| input | decoder | ms per file |")
    print("|---|---|---|")
    for label, decoder, ms in bench_decode(root / "decode"):
        print(f"| {label} | {decoder} | {ms:.1f} |")
    if args.decode_only:
        return

    media = root / "tiny"
    tiny_inputs(media, args.tiny)
    cache = root / "cache"
    shard = {"shard": {"target_files": args.target_files}} if args.target_files else {}
    cold_cfg = write_config(root / "cold.yaml", input_dir=str(media), results_dir="results",
                            cache={"dir": str(cache)}, **shard)
    cold = snakemake(root, cold_cfg)
    warm_cfg = write_config(root / "warm.yaml", input_dir=str(media), results_dir="results-warm",
                            cache={"dir": str(cache)}, **shard)
    warm = snakemake(root, warm_cfg)
    noop = snakemake(root, warm_cfg)
    print(f"\n{args.tiny} tiny inputs (0.2 s each), 2 cores:")
    print("| run | wall s | ms per file |")
    print("|---|---|---|")
    for label, seconds in (("cold (decode, features, CLAP on CPU)", cold),
                           ("every job reruns, all artifacts in the store (orchestration only)", warm),
                           ("no-op rerun (nothing to do)", noop)):
        print(f"| {label} | {seconds:.1f} | {seconds / args.tiny * 1000:.2f} |")

    dag_media = root / "dag"
    tiny_inputs(dag_media, args.dag, seconds=0.02)
    dag_cfg = write_config(root / "dag.yaml", input_dir=str(dag_media), results_dir="results-dag",
                           cache={"dir": str(root / "cache-dag")}, shard={"target_files": 64})
    inventory = snakemake(root, dag_cfg, "--until", "inventory")
    shards = len(list((root / "results-dag" / "bookkeeping" / "inventory" / "shards").glob("*.tsv")))
    dry = snakemake(root, dag_cfg, "-n")
    print(f"\n{args.dag} inputs in {shards} shards: inventory (hash + probe) {inventory:.1f} s, "
          f"dry-run DAG {dry:.1f} s")


if __name__ == "__main__":
    main()
