"""The GPU check: CLAP throughput, the feed, and the whole workflow on a GPU, as one Markdown table and one JSON.

Steps, each under its own time limit (the whole check under 8 minutes on one H100/H200 with 16 cores):

1. ``bench_clap.py --device cuda``: laion-clap's loop, ours fp32, fp16, bf16 and bf16 compiled; windows/s,
   peak GPU memory and each variant's cosine to laion-clap's fp32 embeddings (the AMP cosine).
2. ``bench_loader.py``: the feeder's windows/s on this machine's cores, alone and beside a busy launch thread.
3. The workflow (``snakemake --profile profiles/local``, ``perf.device: cuda``) on ``--short`` short clips and two
   long files, with ``nvidia-smi`` sampling GPU utilisation every 200 ms; the CLAP jobs' model-busy fraction
   (forward seconds over the forward loop's, and the run report's figure, start-up included), their windows/s,
   and the utilisation while they ran.

Targets (issue 16): >= 3,000 windows/s for short clips (fp16 or bf16), model-busy >= 0.9, AMP cosine >= 0.999.

Usage: python benchmarks/device_check.py --out DIR [--short 2000] [--bench-short 1000]
       python benchmarks/device_check.py --out DIR --device cpu --short 20 --bench-short 6   (a rehearsal)
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiofeat.report.advice import model_busy_fraction  # noqa: E402
from audiofeat.report.html import stage_totals  # noqa: E402
from audiofeat.testing.media import benchmark_sets  # noqa: E402

TARGETS = {"short_windows_per_s": 3000, "model_busy": 0.9, "amp_cosine": 0.999}


def run_step(name: str, cmd: list[str], timeout: int, out: Path) -> str:
    """Run one step, its output kept in ``out/<name>.txt``; a step that fails or overruns is reported, not fatal."""
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        text = done.stdout + done.stderr[-3000:] + (f"\n[{name}: exit {done.returncode}]" if done.returncode else "")
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") + f"\n[{name}: over its {timeout} s]"
    (out / f"{name}.txt").write_text(text)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return text


def sampled_gpu(command_log: Path) -> subprocess.Popen | None:
    command_log.touch()
    if not shutil.which("nvidia-smi"):
        return None
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                             "--format=csv,noheader,nounits", "-lms", "200"], stdout=command_log.open("w"),
                            stderr=subprocess.DEVNULL)


def job_spans(logs: Path) -> list[tuple[datetime, datetime]]:
    spans = []
    for log in logs.glob("*.log"):
        stamps = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f") for m in
                  re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", log.read_text(), re.M)]
        if stamps:
            spans.append((min(stamps), max(stamps)))
    return spans


def utilisation_during(samples: Path, spans) -> float | None:
    """Mean GPU utilisation (%) of the samples taken while a CLAP job ran."""
    values = []
    for line in samples.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f")
        except (ValueError, IndexError):
            continue
        if any(start <= stamp <= end for start, end in spans):
            values.append(float(parts[1]))
    return sum(values) / len(values) if values else None


def workflow_step(out: Path, short: int, threads: int, timeout: int, device: str) -> dict:
    """The workflow on the GPU: short clips and two long files, cold, with GPU utilisation sampled."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "audiofeat-device-check"
    benchmark_sets(work / "media", short, 2, long_seconds=600)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "input_dir": str(work / "media"), "results_dir": str(work / "results"), "cache": {"dir": str(work / "cache")},
        "perf": {"device": device, "threads": threads}, "clap": {"checkpoint": "", "allow_random_weights": True}}))
    sampler = sampled_gpu(out / "nvidia_smi.csv")
    started = time.perf_counter()
    text = run_step("workflow", [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                                 "--directory", str(work), "--profile", "profiles/local", "--cores", str(threads),
                                 "--configfile", str(config)], timeout, out)
    wall = time.perf_counter() - started
    if sampler is not None:
        sampler.terminate()
    profiles = [json.loads(p.read_text()) for p in (work / "results" / "bookkeeping" / "timings" / "clap").glob("*.json")]
    if not profiles:
        return {"workflow_error": text[-2000:]}
    loop = sum(p["seconds"].get("clap_loop", 0.0) for p in profiles)
    forward = sum(p["seconds"].get("clap_forward", 0.0) for p in profiles)
    windows = sum(p.get("windows", 0) for p in profiles)
    return {"workflow_wall_s": round(wall, 1), "clap_jobs": len(profiles), "clap_windows": windows,
            "clap_job_s": round(sum(p["wall_s"] for p in profiles), 2), "clap_loop_s": round(loop, 2),
            "clap_setup_s": round(sum(p["seconds"].get("setup", 0.0) for p in profiles), 2),
            "clap_windows_per_s_in_loop": round(windows / loop, 1) if loop else None,
            # forward seconds / the forward loop's (the feed's share), and the run report's figure (job wall time,
            # start-up included, per forward worker)
            "model_busy_in_loop": round(forward / (loop * profiles[0].get("workers", 1)), 3) if loop else None,
            "model_busy_job": model_busy_fraction(stage_totals(profiles)),
            "clap_input_wait_s": round(sum(p["seconds"].get("clap_input_wait", 0.0) for p in profiles), 2),
            "peak_gpu_mb": max((p.get("peak_gpu_mb") or 0) for p in profiles),
            "gpu_utilisation_during_clap_pct": utilisation_during(out / "nvidia_smi.csv",
                                                                  job_spans(work / "results" / "bookkeeping" / "logs" /
                                                                            "extract_clap")),
            "precision": profiles[0].get("precision"), "loader_processes": profiles[0].get("loader_processes")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--short", type=int, default=2000, help="short clips for the workflow step")
    parser.add_argument("--bench-short", type=int, default=1000, help="short clips for bench_clap")
    parser.add_argument("--device", default="cuda", help="cpu: a rehearsal of the script on a machine without GPU")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1
    bench = out / "bench_clap.json"
    run_step("bench_clap", [sys.executable, "benchmarks/bench_clap.py", "--device", args.device, "--short",
                            str(args.bench_short), "--long", "2", "--batch", "64", "--rounds", "1", "--threads",
                            str(threads), "--compile", "--json", str(bench)], 270, out)
    loader = run_step("bench_loader", [sys.executable, "benchmarks/bench_loader.py", "--files", "200", "--repeat",
                                       "8", "--rounds", "1", "--max-seconds", "10"], 90, out)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "none"
    results = {"gpu": gpu,
               "cores": threads, "targets": TARGETS,
               "bench_clap": json.loads(bench.read_text())["rows"] if bench.exists() else None,
               "feeder": next((line for line in loader.splitlines() if line.startswith("feeder:")), None)}
    results.update(workflow_step(out, args.short, threads, 150, args.device))
    (out / "device_check.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "device_check.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [f"GPU: {results['gpu']}; {results['cores']} cores", "",
             "| set | variant | windows/s | vs laion loop | peak GPU MiB | min cosine vs laion fp32 |",
             "|---|---|---|---|---|---|"]
    for row in results.get("bench_clap") or []:
        lines.append(f"| {row['set']} | {row['variant']} | {row['windows_per_s']:,.1f} | {row['speedup_vs_a']:.2f}x "
                     f"| {row['peak_gpu_mib'] if row['peak_gpu_mib'] == row['peak_gpu_mib'] else '-'} "
                     f"| {row['min_cosine_vs_a']:.5f} |")
    lines += ["", f"{results.get('feeder')}", "", "| workflow | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in results.items()
              if key not in ("gpu", "cores", "targets", "bench_clap", "feeder")]
    lines += ["", f"Targets: {results['targets']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
