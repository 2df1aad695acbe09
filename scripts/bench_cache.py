"""Benchmark reruns: a cold run over N short files, a rerun with nothing to do, and a rerun after adding one file.

Each is a real `snakemake --profile profiles/local` run (start-up included), in one fresh working folder with
its own store, with the CLAP weights loaded from a LAION-format checkpoint file (a seeded tower). Prints wall
seconds and each rerun as a share of the cold run.

With ``--compare-claims K``, it then adds K files at a time, four times, and reruns alternately with the
workflow's thread claims (a shard job claims no more threads than it has pieces of work) and with every shard
job claiming all of ``perf.threads`` (``--set-threads``, how the workflow claimed before), and prints both.

Usage: python scripts/bench_cache.py [--files 1000] [--target-files 1024] [--compare-claims K] [--workdir DIR]
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.config import resolve_threads  # noqa: E402
from audiofeat.testmedia import scratch_folder, write_seeded_checkpoint, write_tone_clips  # noqa: E402


def snakemake(workdir: Path, config: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--profile", str(REPO / "profiles" / "local"), "--configfile", str(config), *extra]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--target-files", type=int, default=1024, help="shard.target_files")
    parser.add_argument("--compare-claims", type=int, default=0, metavar="K")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    with scratch_folder(args.workdir, "audiofeat-cache-bench-") as root:
        media = root / "media"
        write_tone_clips(media, args.files, seed=0)
        # A LAION-format checkpoint file, loaded as a user's run loads LAION's (which cannot be downloaded here).
        checkpoint = write_seeded_checkpoint(root / "clap-seeded.pt")
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump({"input_dir": str(media), "results_dir": "results",
                                          "cache": {"dir": str(root / "cache")},
                                          "shard": {"target_files": args.target_files},
                                          "clap": {"checkpoint": str(checkpoint)}}))
        cold = snakemake(root, config)
        noop = snakemake(root, config)
        write_tone_clips(media / "added", 1, seed=1)
        added_at = time.time()
        added = snakemake(root, config)
        # Jobs that ran in the incremental run: their Snakemake benchmark files were rewritten by it, at the job's
        # end, so each job spans [mtime - seconds, mtime]; jobs may overlap (a shard's features and CLAP jobs do).
        reran = []
        for tsv in sorted((root / "results" / "benchmarks").rglob("*.tsv")):
            if tsv.stat().st_mtime >= added_at:
                header, values = tsv.read_text().splitlines()[:2]
                seconds = float(dict(zip(header.split("\t"), values.split("\t")))["s"])
                reran.append((str(tsv.relative_to(root / "results" / "benchmarks")), seconds,
                              tsv.stat().st_mtime - seconds, tsv.stat().st_mtime))
        print(f"{args.files} short files (1 s each), {os.cpu_count()} cores, `snakemake --profile profiles/local`:")
        print("| run | wall s | share of cold |")
        print("|---|---|---|")
        for label, seconds in (("cold", cold), ("rerun, nothing to do", noop), ("rerun after adding 1 file", added)):
            print(f"| {label} | {seconds:.1f} | {seconds / cold:.1%} |")
        print("\nJobs the incremental run ran (Snakemake benchmark seconds, start relative to the first job's):")
        first = min((start for *_, start, _ in reran), default=0.0)
        for name, seconds, start, _ in sorted(reran, key=lambda job: job[2]):
            print(f"- {name}: {seconds:.2f} s, from {start - first:.2f} s")
        print(f"- no job running (Snakemake's start-up, DAG, scheduling and exit): "
              f"{added - busy_seconds([(start, end) for *_, start, end in reran]):.2f} s")
        if args.compare_claims:
            compare_claims(root, media, config, args.compare_claims)


def compare_claims(root: Path, media: Path, config: Path, count: int) -> None:
    """Reruns after adding ``count`` files, alternating the workflow's claims with all-threads claims."""
    threads = resolve_threads(0)
    every_core = ["--set-threads", *(f"{rule}={threads}" for rule in ("ingest_decode", "features_extract",
                                                                     "clap_embed"))]
    shard_dir = root / "results" / "inventory" / "shards"
    shards_before = sorted(p.name for p in shard_dir.glob("*.tsv"))
    pending, every = "by pending work", f"all {threads} threads"
    seconds: dict[str, list[float]] = {pending: [], every: []}
    for round_, claim in enumerate((pending, every, every, pending)):  # ABBA: drift hits both alike
        write_tone_clips(media / f"added-{round_}", count, seed=100 + round_)
        seconds[claim].append(snakemake(root, config, *(every_core if claim == every else [])))
    if sorted(p.name for p in shard_dir.glob("*.tsv")) != shards_before:
        print("\nWARNING: the shard count changed while files were added, so one rerun redid every shard's jobs "
              "and the comparison below is not like for like; choose --target-files to keep it")
    print(f"\nRerun after adding {count} files ({len(shards_before)} shards), shard jobs' thread claims:")
    print("| claims | runs, wall s | mean |")
    print("|---|---|---|")
    mean = {claim: sum(values) / len(values) for claim, values in seconds.items()}
    for claim, values in seconds.items():
        print(f"| {claim} | {', '.join(f'{v:.1f}' for v in values)} | {mean[claim]:.1f} |")
    print(f"\nBy pending work: {mean[every] / mean[pending]:.2f}x the all-threads claims (ratio of the means).")


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


if __name__ == "__main__":
    main()
