"""Benchmark a CLAP job's weight loading from a large LAION-format checkpoint: ours vs the plain way.

LAION's files hold the text tower (and some the optimizer state) besides the audio tower. This writes a
checkpoint with the seeded HTSAT-tiny audio tower plus ``--extra-gb`` of other tensors, then times, in one process,
alternating (median of ``--rounds``):
- plain: sha256 of the whole file, ``torch.load`` of the whole file, a randomly initialised tower, load_state_dict;
- ours: the sha256 remembered by the file's stat (recorded once, as the first job of a run does), a tower built
  without random initialisation, the audio tensors read from a memory-mapped ``torch.load``.

Usage: python benchmarks/bench_checkpoint.py [--extra-gb 1.6] [--rounds 3] [--workdir DIR]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audiofeat.clap import checkpoint, forward  # noqa: E402
from audiofeat.testing.media import scratch_folder, write_seeded_checkpoint  # noqa: E402


def write_checkpoint(path: Path, extra_gb: float) -> None:
    import torch

    chunk = 32 * 1024 * 1024  # float32 elements: 128 MiB per tensor
    extra = {f"text_branch.extra{i}": torch.zeros(chunk) for i in range(max(0, round(extra_gb * 1e9 / (4 * chunk))))}
    write_seeded_checkpoint(path, extra=extra)


def plain(path: Path) -> float:
    import torch

    started = time.perf_counter()
    checkpoint.sha256_file(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    state = {k[len("module."):]: v for k, v in loaded["state_dict"].items()
             if k[len("module."):].startswith(checkpoint.AUDIO_KEY_PREFIXES)}
    forward.build_audio_tower("HTSAT-tiny").load_state_dict(state)
    return time.perf_counter() - started


def ours(path: Path, index_dir: Path) -> float:
    started = time.perf_counter()
    checkpoint.checkpoint_sha256(path, index_dir)
    checkpoint.load_audio_weights(forward.build_audio_tower("HTSAT-tiny", initialise=False), path)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra-gb", type=float, default=1.6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    with scratch_folder(args.workdir, "audiofeat-ckpt-bench-") as root:
        path = root / "laion-sized.pt"
        write_checkpoint(path, args.extra_gb)
        checkpoint.checkpoint_sha256(path, root / "index")  # what the first CLAP job of a run records
        times = {"plain": [], "ours": []}
        for _ in range(args.rounds):
            times["plain"].append(plain(path))
            times["ours"].append(ours(path, root / "index"))
        plain_s, ours_s = statistics.median(times["plain"]), statistics.median(times["ours"])
        print(f"checkpoint {os.path.getsize(path) / 1e9:.2f} GB (HTSAT-tiny audio tower + {args.extra_gb} GB of "
              f"other tensors), {os.cpu_count()} cores, median of {args.rounds} alternating rounds:")
        print("| weight loading | seconds |\n|---|---|")
        print(f"| plain: sha256 + full torch.load + random init + load | {plain_s:.2f} |")
        print(f"| ours: remembered sha256 + no init + mmap load | {ours_s:.2f} |")
        print(f"speed-up: {plain_s / ours_s:.0f}x")
        path.unlink()  # even in a --workdir that stays: the file is only a stand-in of LAION's size


if __name__ == "__main__":
    main()
