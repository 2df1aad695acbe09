"""Benchmark CLAP embedding: what a user writes with laion-clap against ours, same weights, same windows.

(a) laion-clap as users write it: one file at a time, ``librosa.load(sr=48000)``, LAION's int16 round trip and
    ``get_audio_features`` (repeat-pad), ``CLAP.get_audio_embedding`` per window, batch 1.
(b) ours, one window at a time: the CLAP job's path from decoded WAVs (the decode job's artifacts; decoding is not
    timed here, it is the decode job's), batch 1.
(c) ours, micro-batched as the CLAP job runs: the feeder prepares windows (on CUDA in ``--threads - 1`` worker
    processes, on the CPU in the job's thread) while batches of ``--batch`` windows run (on the CPU one
    single-threaded forward worker per core; on CUDA one stream, in fp32, fp16 and bf16 autocast, and bf16
    compiled with ``--compile``).

Both sets are built from the machine's real recordings (Debian's alsa and freedesktop sounds, espeak-ng speech)
where present, else from ffmpeg-made tones and noise: a short set (clips <= 15 s) and a long set (>= 2 min).
The weights are a seeded random LAION-format checkpoint (the published ones cannot be downloaded here); speed
does not depend on the values. Prints windows/s, x realtime, speed-ups, peak GPU memory and the cosine between
(a) and (c).

Usage: python benchmarks/bench_clap.py [--device cpu|cuda] [--short 48] [--long 2] [--batch 16] [--rounds 3]
       [--compile] [--json FILE]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

import audiofeat.clap as clap_pkg  # noqa: E402
from audiofeat.clap import forward, laion  # noqa: E402
from audiofeat.clap.checkpoint import resolve_weights  # noqa: E402
from audiofeat.config.settings import CacheSettings  # noqa: E402
from audiofeat.extractors.clap import ClapSettings  # noqa: E402
from audiofeat.clap import model as clap_model  # noqa: E402
from audiofeat._speedups import retain_freed_memory  # noqa: E402
from audiofeat.clap.embed import ClapEmbedder, pass_windows  # noqa: E402
from audiofeat.clap.feeder import FilePlan, WindowFeeder  # noqa: E402
from audiofeat.clap.windows import plan_windows  # noqa: E402
from audiofeat.inputs.media import load_audio  # noqa: E402
from audiofeat.inputs.wav import wav_bytes  # noqa: E402
from audiofeat.testing.media import benchmark_sets  # noqa: E402

SR = 48000
L = clap_pkg.MODEL_INPUT_SAMPLES
W, H = 10 * SR, 5 * SR


def laion_reference(checkpoint: Path, device: str):
    """laion-clap's CLAP (audio tower + a small local text tower) with the checkpoint's weights."""
    from laion_clap.clap_module.model import CLAP

    cfg = laion.audio_config("HTSAT-tiny")
    text_cfg = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=2, model_type="transformer")
    model = CLAP(embed_dim=cfg["embed_dim"], audio_cfg=cfg["audio_cfg"], text_cfg=text_cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k[len("module."):]: v for k, v in state.items()}, strict=False)
    return model.eval().to(device), cfg


def run_laion_loop(files, model, cfg, device) -> tuple[float, int, list]:
    import librosa
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    embeddings, windows = [], 0
    started = time.perf_counter()
    for path in files:
        y, _ = librosa.load(str(path), sr=SR)
        y = int16_to_float32(float32_to_int16(y))
        for w in plan_windows(len(y), W, H):
            features = get_audio_features({}, torch.from_numpy(y[w.start:w.end]).float(), L,
                                          data_truncating="rand_trunc", data_filling="repeatpad",
                                          audio_cfg=cfg["audio_cfg"])
            with torch.no_grad():
                embeddings.append(model.get_audio_embedding([features]).cpu().numpy()[0])
            windows += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, windows, embeddings


def decoded(files, folder: Path) -> list[FilePlan]:
    """Each file decoded to a 48 kHz WAV as the decode job stores it, and its windows' plan."""
    plans = []
    for i, path in enumerate(files):
        _, y = load_audio(str(path), target_sr=SR)
        wav = folder / f"{path.stem}.decoded.wav"
        wav.write_bytes(wav_bytes(y, SR))
        plans.append(FilePlan(i, str(wav), tuple(plan_windows(len(y), W, H)), W))
    return plans


def run_ours(plans, loaded, *, batch: int, workers: int, precision: str, processes: int
             ) -> tuple[float, int, list, float]:
    embedder = ClapEmbedder(loaded, max_batch_windows=batch, precision=precision, workers=workers,
                            fixed_shape=loaded.forward is not loaded.model)
    cuda = loaded.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    feeder = WindowFeeder(plans, batch_windows=pass_windows(batch, workers, cuda), workers=processes,
                          buffers=workers + 3, tail_workers=workers)
    embeddings = []
    for _, result in embedder.embed_batches(feeder.batches()):
        embeddings.extend(result)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return time.perf_counter() - started, len(embeddings), embeddings, peak


def audio_seconds(files) -> float:
    return sum(sf.info(str(f)).duration for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--short", type=int, default=48)
    parser.add_argument("--long", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--compile", action="store_true", help="also bf16 with a compiled forward (CUDA)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = args.device
    cpu = not device.startswith("cuda")
    # The CLAP job does this on the CPU; done here before every variant, so (a) gets the same allocator.
    retained = cpu and retain_freed_memory()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short, long = benchmark_sets(tmp / "media", args.short, args.long)
        torch.manual_seed(0)
        tower = forward.build_audio_tower("HTSAT-tiny")
        checkpoint = tmp / "630k-bench.pt"
        # The LAION side also needs text keys: save a full CLAP state dict with this audio tower inside.
        reference, cfg = laion_reference_from_tower(tower, checkpoint, device)
        path, weights = resolve_weights(ClapSettings(checkpoint=str(checkpoint)), CacheSettings(dir=str(tmp)))
        loaded = clap_model.get_model("HTSAT-tiny", path, weights, device=device)
        compiled = clap_model.get_model("HTSAT-tiny", path, weights, device=device, compiled=True,
                                        compile_cache=str(tmp / "torch-compile")) if args.compile else None
        processes = 0 if cpu else max(1, args.threads - 1)
        rows, results = [], {"device": device, "torch": torch.__version__, "threads": args.threads,
                             "rounds": args.rounds}
        for set_name, files in (("short", short), ("long", long)):
            seconds = audio_seconds(files)
            plans = decoded(files, tmp)

            def with_threads(n, fn):
                def run():
                    torch.set_num_threads(n)
                    return fn()
                return run

            def laion_loop():
                return (*run_laion_loop(files, reference, cfg, device), float("nan"))

            def ours(batch, workers, precision="fp32", model=loaded):
                return lambda: run_ours(plans, model, batch=batch, workers=workers, precision=precision,
                                        processes=processes)

            variants = [("(a) laion-clap loop", with_threads(args.threads, laion_loop)),
                        ("(b) ours, 1 window at a time", with_threads(args.threads, ours(1, 1)))]
            if cpu:
                variants += [
                    (f"(c) ours, micro-batched ({args.batch}), 1 worker x {args.threads} threads",
                     with_threads(args.threads, ours(args.batch, 1))),
                    (f"(c) ours, micro-batched ({args.batch}), {args.threads} workers x 1 thread",
                     with_threads(1, ours(args.batch, args.threads)))]
            else:
                variants += [(f"(c) ours, micro-batched ({args.batch}), {p}", ours(args.batch, 1, p))
                             for p in ("fp32", "fp16", "bf16")]
                if compiled is not None:
                    variants.append((f"(c) ours, micro-batched ({args.batch}), bf16, compiled",
                                     ours(args.batch, 1, "bf16", compiled)))
                    variants[-1][1]()  # the compile itself is not what the rounds measure
            with_threads(args.threads, lambda: run_laion_loop(files[:1], reference, cfg, device))()  # warm
            # Rounds alternate the variants, so a slow spell of this shared machine hits them all alike.
            times = {name: [] for name, _ in variants}
            outputs = {}
            for _ in range(args.rounds):
                for name, run in variants:
                    t, n, emb, peak = run()
                    times[name].append(t)
                    outputs.setdefault(name, (n, emb, peak))
            t_a = float(np.median(times[variants[0][0]]))
            e_a = outputs[variants[0][0]][1]
            for name, _ in variants:
                t = float(np.median(times[name]))
                n, emb, peak = outputs[name]
                cos = float(np.min(np.sum(np.asarray(emb) * np.asarray(e_a), axis=1)))
                rows.append((set_name, name, n, n / t, seconds / t, t_a / t, peak, cos))
        results["rows"] = [dict(zip(("set", "variant", "windows", "windows_per_s", "x_realtime", "speedup_vs_a",
                                     "peak_gpu_mib", "min_cosine_vs_a"), r)) for r in rows]
    print(f"device {device}, torch {torch.__version__}, {args.threads} threads, median of {args.rounds} alternating "
          f"rounds; weights: seeded random, LAION format; glibc keeps freed memory (all variants): {retained}")
    print("| set | variant | windows | windows/s | x realtime | vs (a) | peak GPU MiB | min cosine vs (a) |")
    print("|---|---|---|---|---|---|---|---|")
    for set_name, name, n, wps, xrt, speedup, peak, cos in rows:
        peak_text = "-" if np.isnan(peak) else f"{peak:,.0f}"
        print(f"| {set_name} | {name} | {n} | {wps:,.1f} | {xrt:,.1f} | {speedup:.2f}x | {peak_text} | {cos:.5f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


def laion_reference_from_tower(tower, checkpoint: Path, device: str):
    """Save ``tower`` inside a full LAION-format CLAP checkpoint, and build laion-clap's model from it."""
    from laion_clap.clap_module.model import CLAP

    cfg = laion.audio_config("HTSAT-tiny")
    text_cfg = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=2, model_type="transformer")
    full = CLAP(embed_dim=cfg["embed_dim"], audio_cfg=cfg["audio_cfg"], text_cfg=text_cfg)
    state = full.state_dict()
    state.update(tower.state_dict())
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    return laion_reference(checkpoint, device)


if __name__ == "__main__":
    main()
