"""Benchmark the cluster path on the local one-node SLURM (.ci/local_slurm.sh): N shards of tiny files run with
profiles/slurm, and the same inputs with profiles/local, on fresh stores.

Prints, per run, how many jobs were submitted, when the last one was (seconds from the start, and per shard), and
the total wall time, with its ratio to the local run. The SLURM run's submission times are those of the plugin's
"submitted with SLURM jobid" lines, read as they arrive.

``--snakefile`` runs another checkout's workflow (a worktree of an earlier commit: the "before" run), and
``--plugin-path`` puts another SLURM plugin first on the path (``pip install --no-deps --target DIR
snakemake-executor-plugin-slurm==2.6.1``); ``--slurm-args`` are added to the SLURM run's command line.

``--files-per-shard`` sets how much work each job carries (4 tiny files by default: the submissions' worst case).

Usage: python benchmarks/bench_slurm.py [--shards 64] [--files-per-shard 4] [--workdir DIR] [--snakefile PATH] [--plugin-path DIR]
                                        [--slurm-args "--slurm-init-seconds-before-status-checks 2"] [--no-local]
                                        [--label NAME]
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.testing.media import scratch_folder, write_tone_clips  # noqa: E402

SUBMITTED = re.compile(r"submitted with SLURM jobid \d+")


def run(work: Path, name: str, snakefile: Path, profile: str, extra: list[str], env: dict, per_shard: int) -> dict:
    """One run in its own folder and store; the submission lines timed as they arrive."""
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "input_dir": str(work / "media"), "results_dir": f"results-{name}", "extractors": ["loudness"],
        "cache": {"dir": str(work / f"cache-{name}")}, "shard": {"target_files": per_shard}}))
    cores = ["--cores", "2"] if profile == "local" else []
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(work),
           "--profile", str(REPO / "profiles" / profile), *cores, "--configfile", str(config), *extra]
    started = time.perf_counter()
    submitted = []
    with subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if SUBMITTED.search(line):
                submitted.append(time.perf_counter() - started)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed ({proc.returncode})")
    shards = len(list((work / f"results-{name}").rglob("inventory/shards/*.tsv")))
    return {"name": name, "wall_s": wall, "jobs": len(submitted), "last_submit_s": max(submitted, default=0.0),
            "shards": shards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=64, help="shards wanted")
    parser.add_argument("--files-per-shard", type=int, default=4, help="tiny files per shard (shard.target_files)")
    parser.add_argument("--workdir", help="keep the media, stores and results here")
    parser.add_argument("--snakefile", default=str(REPO / "Snakefile"))
    parser.add_argument("--plugin-path", help="a folder holding another SLURM executor plugin, put first")
    parser.add_argument("--slurm-args", default="", help="more arguments for the SLURM run")
    parser.add_argument("--no-local", action="store_true", help="skip the local run")
    parser.add_argument("--label", default="slurm", help="the SLURM run's name (its results and store folders)")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if args.plugin_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.plugin_path, env.get("PYTHONPATH")]))
    with scratch_folder(args.workdir, "bench-slurm-") as work:
        if not (work / "media").exists():
            write_tone_clips(work / "media", args.files_per_shard * args.shards, seed=3, seconds=0.3, sr=16000)
        per_shard = args.files_per_shard
        rows = [] if args.no_local else [run(work, "local", Path(args.snakefile), "local", [], env, per_shard)]
        rows.append(run(work, args.label, Path(args.snakefile), "slurm", shlex.split(args.slurm_args), env, per_shard))
    local = rows[0]["wall_s"] if not args.no_local else None
    print(f"snakefile {args.snakefile}; plugin {args.plugin_path or 'installed'}; slurm args {args.slurm_args!r}")
    print("| run | shards | jobs submitted | last submitted, s | per shard, s | total, s | vs local |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['wall_s'] / local:.2f}" if local else "-"
        print(f"| {row['name']} | {row['shards']} | {row['jobs']} | {row['last_submit_s']:.1f} | "
              f"{row['last_submit_s'] / max(1, row['shards']):.2f} | {row['wall_s']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
