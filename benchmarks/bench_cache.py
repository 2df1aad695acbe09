"""Benchmark reruns: a cold run over N short files, a rerun with nothing to do, and a rerun after adding one file.

Each is a real `snakemake --profile profiles/local` run (start-up included), in one fresh working folder with
its own store, with the CLAP weights loaded from a LAION-format checkpoint file (a seeded tower). Each kind of
rerun runs ``--repeats`` times (a new file is added before each rerun of the second kind), since one run on a noisy
machine can be off by a third; prints every wall time, the medians and each median as a share of the cold run.

With ``--compare-claims K``, it then adds K files at a time, four times, and reruns alternately with the
workflow's thread claims (a shard job claims no more threads than it has pieces of work) and with every shard
job claiming all of ``perf.threads`` (``--set-threads``, how the workflow claimed before), and prints both.

Usage: python benchmarks/bench_cache.py [--files 1000] [--target-files 1024] [--repeats 5] [--compare-claims K]
                                     [--workdir DIR]
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.config.schema import resolve_threads  # noqa: E402
from audiofeat.testing.media import scratch_folder, write_seeded_checkpoint, write_tone_clips  # noqa: E402


def snakemake(workdir: Path, config: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--profile", str(REPO / "profiles" / "local"), "--configfile", str(config), *extra]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stale_bytecode() -> list[str]:
    """audiofeat's modules whose compiled bytecode is missing or older than the source: where writing bytecode is
    off (PYTHONDONTWRITEBYTECODE=1), every job of every run compiles those anew; `make setup` compiles them."""
    stale = []
    for source in sorted((REPO / "audiofeat").rglob("*.py")):
        compiled = Path(importlib.util.cache_from_source(str(source)))
        if not compiled.exists() or compiled.stat().st_mtime < source.stat().st_mtime:
            stale.append(str(source.relative_to(REPO)))
    return stale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--target-files", type=int, default=1024, help="shard.target_files")
    parser.add_argument("--repeats", type=int, default=5, help="reruns of each kind (medians are reported)")
    parser.add_argument("--compare-claims", type=int, default=0, metavar="K")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    stale = stale_bytecode()
    if stale and os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(f"WARNING: PYTHONDONTWRITEBYTECODE is set and {len(stale)} audiofeat modules have no up-to-date "
              "bytecode, so every job will compile them: run `make setup` first", file=sys.stderr)
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
        noops = [snakemake(root, config) for _ in range(args.repeats)]
        added, jobs = [], []
        for repeat in range(args.repeats):  # one more file each time, so every rerun has one file to compute
            write_tone_clips(media / f"added-one-{repeat}", 1, seed=1 + repeat)
            added_at = time.time()
            added.append(snakemake(root, config))
            jobs.append(jobs_since(root / "results" / "bookkeeping" / "benchmarks", added_at))
        print(f"{args.files} short files (1 s each), {os.cpu_count()} cores, `snakemake --profile profiles/local`; "
              f"each rerun {args.repeats} times:")
        print("| run | wall s, each | median | median's share of cold |")
        print("|---|---|---|---|")
        print(f"| cold | {cold:.1f} | {cold:.1f} | 100.0% |")
        for label, runs in (("rerun, nothing to do", noops), ("rerun after adding 1 file", added)):
            print(f"| {label} | {', '.join(f'{r:.1f}' for r in runs)} | {median(runs):.2f} | "
                  f"{median(runs) / cold:.1%} |")
        print("\nJobs of the reruns after adding 1 file (Snakemake benchmark seconds; medians over the reruns):")
        for name in sorted({name for run in jobs for name in run}, key=lambda n: median(
                [run[n][1] for run in jobs if n in run])):
            print(f"- {name}: {median([run[name][0] for run in jobs if name in run]):.2f} s, from "
                  f"{median([run[name][1] for run in jobs if name in run]):.2f} s")
        idle = [wall - busy_seconds([(start, start + seconds) for seconds, start in run.values()])
                for wall, run in zip(added, jobs)]
        print(f"- no job running (Snakemake's start-up, DAG, scheduling and exit): {median(idle):.2f} s")
        if args.compare_claims:
            compare_claims(root, media, config, args.compare_claims)


def compare_claims(root: Path, media: Path, config: Path, count: int) -> None:
    """Reruns after adding ``count`` files, alternating the workflow's claims with all-threads claims."""
    threads = resolve_threads(0)
    every_core = ["--set-threads", *(f"{rule}={threads}" for rule in ("decode", "extract_features",
                                                                     "extract_clap"))]
    shard_dir = root / "results" / "bookkeeping" / "inventory" / "shards"
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


def jobs_since(benchmarks: Path, since: float) -> dict[str, tuple[float, float]]:
    """``{job: (seconds, start relative to the first job's)}`` of the jobs that ran since ``since``: their Snakemake
    benchmark files were rewritten at the job's end, so each job spans ``[mtime - seconds, mtime]``."""
    spans = {}
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        if tsv.stat().st_mtime >= since:
            header, values = tsv.read_text().splitlines()[:2]
            seconds = float(dict(zip(header.split("\t"), values.split("\t")))["s"])
            spans[str(tsv.relative_to(benchmarks))] = (seconds, tsv.stat().st_mtime - seconds)
    first = min((start for _, start in spans.values()), default=0.0)
    return {name: (seconds, start - first) for name, (seconds, start) in spans.items()}


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
