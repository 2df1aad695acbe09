"""CLAP embeddings as an extractor: LAION's HTSAT audio tower over deterministic windows, micro-batched across
files while worker processes prepare the next windows (:mod:`audiofeat.clap.feeder`).

The job's pieces: :func:`file_plan` (a decoded file's windows), :meth:`ClapExtractor.compute` (the embedding
stream), :func:`clap_artifact` (a file's result as a stored ``.npz``) and :func:`clap_block` (its manifest
block). Lookup and storing are the shard runner's, as for every extractor. Nothing here imports torch until a
file has to be embedded.
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..clap import EMBEDDING_DIM, MODEL_SAMPLE_RATE
from ..config.schema import ConfigError
from ..config.settings import Section
from ..faults import Verdict, is_fault, one_line
from ..store.artifacts import ArtifactKey, ArtifactStore, StoredArtifact
from ..store.tables import DecodeRecord
from .base import Computed, Extractor


@dataclass(frozen=True)
class ClapSettings(Section):
    """Config section ``clap``: the model, its weights and how the forward passes run."""

    name = "clap"
    properties = {
        "model": {"type": "string", "enum": ["HTSAT-tiny", "HTSAT-base"], "description": "laion-clap audio tower."},
        "checkpoint": {"type": "string", "description": 'Path of a LAION CLAP checkpoint (.pt), "auto" to fetch '
                       "LAION's published file, or \"\" for none."},
        "allow_random_weights": {"type": "boolean", "description": "Without a checkpoint, use a seeded random "
                                 "model (manifests say so in clap.weights)."},
        "enable_amp": {"type": "boolean", "description": "With precision auto, autocast to float16 on CUDA "
                       "(ignored on CPU)."},
        "precision": {"type": "string", "enum": ["auto", "fp32", "fp16", "bf16"], "description": "Autocast dtype "
                      "of the forward passes (the STFT and mel front end stay float32); part of the CLAP key."},
        "compile": {"type": "string", "enum": ["auto", "true", "false"], "description": "torch.compile the "
                    "forward pass (auto - CUDA jobs with at least 20,000 windows); graphs cached under cache.dir."},
        "max_batch_audio_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "Model-input seconds "
                                    "stacked in one forward pass (each window counts at its full length)."},
    }
    model: str = "HTSAT-tiny"
    checkpoint: str = ""
    allow_random_weights: bool = False
    enable_amp: bool = True
    precision: str = "auto"  # auto (fp16 on CUDA when enable_amp, else fp32), fp32, fp16, bf16
    compile: str = "auto"  # auto (CUDA jobs with enough windows), true, false
    max_batch_audio_seconds: float = 160.0


@dataclass(frozen=True)
class SegmentSettings(Section):
    """Config section ``segment``: CLAP's sliding windows over audio longer than one window."""

    name = "segment"
    properties = {
        "enabled": {"type": "boolean", "description": "Cut audio longer than one window into sliding windows; "
                    "otherwise use one window."},
        "window_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "description": "Window length, "
                           "in seconds (at most the model's 10 s input; shorter windows are repeat-padded)."},
        "hop_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "Hop between window starts, in "
                        "seconds."},
        "aggregate_mode": {"type": "string", "enum": ["mean", "weighted", "robust"], "description": "How window "
                           "embeddings become one clip embedding."},
        "save_segments": {"type": "boolean", "description": "Also store the per-window embeddings as an "
                          "artifact the manifest points to."},
    }
    enabled: bool = True
    window_seconds: float = 10.0
    hop_seconds: float = 5.0
    aggregate_mode: str = "mean"
    save_segments: bool = False


@dataclass(frozen=True)
class ClapParams:
    """What changes a CLAP artifact (batch limits do not: batching is exact)."""

    model: str
    weights: str | None  # "laion:sha256:<hex>" or "random(seed=0)"; None while unknown (not yet hashed)
    precision: str
    segment_enabled: bool
    window_seconds: float
    hop_seconds: float
    aggregate_mode: str


# clap.compile: auto compiles a CUDA job's forward pass only when it has this many windows to repay the compile
# (tens of seconds cold; compiled graphs are cached under cache.dir). To be tuned with benchmarks/device_check.sh.
COMPILE_AUTO_MIN_WINDOWS = 20000


def clap_precision(device: str, clap) -> str:
    """The forward passes' precision (``fp32``, ``fp16``, ``bf16``): ``clap.precision``, where ``auto`` is
    float16 autocast on CUDA when ``clap.enable_amp`` (the seed's switch), else float32."""
    if clap.precision != "auto":
        return clap.precision
    return "fp16" if clap.enable_amp and device.startswith("cuda") else "fp32"


def compile_wanted(setting: str, device: str, windows: int) -> bool:
    """``clap.compile``: ``true``/``false``, or ``auto`` (a CUDA job with enough windows to repay it)."""
    if setting in ("true", "false"):
        return setting == "true"
    return device.startswith("cuda") and windows >= COMPILE_AUTO_MIN_WINDOWS


def preparation_processes(setting: int, device: str, threads: int) -> int:
    """Worker processes preparing windows (``perf.loader_processes``; -1 is auto): on CUDA one per thread but
    the one that launches kernels; on the CPU none, since there the forward passes run without the GIL and the
    job's own thread prepares beside them at no cost to them."""
    if setting >= 0:
        return setting
    return max(1, threads - 1) if device.startswith("cuda") else 0


class ClapExtractor(Extractor):
    name = "clap"
    version = "1"  # bump when embeddings change for the same audio, weights and parameters
    suffix = ".npz"
    inline_block = True
    reports_progress = True  # windows as their batches finish: a ten-hour file says how far it is
    work_unit_name = "windows"
    settings_sections = (ClapSettings, SegmentSettings)
    matrix = ("embeddings.npy", "clap_embedding", EMBEDDING_DIM)
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["model", "weights", "embedding", "segments", "aggregate_strategy", "precision"],
        "properties": {
            "model": {"type": "string"}, "precision": {"type": "string"}, "segments_artifact": {"type": "string"},
            "weights": {"type": "string", "description": "laion:sha256:<hex> or random(seed=N)"},
            "embedding": {"type": "array", "items": {"type": "number"}, "minItems": 1},
            "segments": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["start_s", "end_s"],
                "properties": {"start_s": {"type": "number", "minimum": 0}, "end_s": {"type": "number", "minimum": 0}}}},
            "aggregate_strategy": {"type": "object", "required": ["mode"]},
        },
    }

    def __init__(self, params: ClapParams, *, wav_params_hash: str, clap=None, segment=None,
                 checkpoint_path: str | None = None, device: str = "cpu", loader_processes: int = -1,
                 compile_cache: str | None = None) -> None:
        super().__init__(params, wav_params_hash=wav_params_hash)
        self.settings, self.segment = clap, segment
        self.checkpoint_path, self.device = checkpoint_path, device
        self.loader_processes, self.compile_cache = loader_processes, compile_cache

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "ClapExtractor":
        """In the job, the weights are resolved (a checkpoint hashed once by its stat, or downloaded) and the
        device is torch's; in the workflow's process neither imports torch nor hashes (weights None while no
        digest is remembered, so every file counts as missing)."""
        from ..clap.checkpoint import known_weights, resolve_weights
        from ..clap.embed import precision_label
        from ..clap.model import likely_device, resolve_device
        from .decode import DecodeExtractor

        clap, cache, segment = settings.of(ClapSettings), settings.cache, settings.of(SegmentSettings)
        if segment.hop_seconds > segment.window_seconds:
            raise ConfigError("config key segment.hop_seconds must not exceed segment.window_seconds "
                              "(audio between windows would be skipped)")
        if job:
            path, weights = resolve_weights(clap, cache)
            device = resolve_device(settings.perf.device)
        else:
            path, device = None, likely_device(settings.perf.device)
            weights = known_weights(clap, cache)
        params = ClapParams(clap.model, weights, precision_label(clap_precision(device, clap)),
                            bool(segment.enabled), float(segment.window_seconds), float(segment.hop_seconds),
                            segment.aggregate_mode)
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash, clap=clap,
                   segment=segment, checkpoint_path=path, device=device,
                   loader_processes=settings.perf.loader_processes,
                   compile_cache=os.path.join(settings.store_dir(), "torch-compile"))

    def key(self, content_key: str) -> ArtifactKey | None:
        return None if self.params.weights is None else super().key(content_key)

    def window_and_hop(self) -> tuple[int, int]:
        """``segment.window_seconds`` and ``segment.hop_seconds`` in samples at the model's rate."""
        return (int(round(self.params.window_seconds * MODEL_SAMPLE_RATE)),
                int(round(self.params.hop_seconds * MODEL_SAMPLE_RATE)))

    def work_units(self, file: DecodeRecord) -> int:
        from ..clap.windows import plan_windows

        n = max(1, round(file.duration_s * MODEL_SAMPLE_RATE))
        return len(plan_windows(n, *self.window_and_hop(), segment=self.params.segment_enabled))

    def compute(self, files, *, threads, profile, progress=None
                ) -> Iterator[tuple[DecodeRecord, Computed | BaseException]]:
        """Embeddings of ``files``, micro-batched; on the CPU ``threads`` single-threaded forward passes run at
        once, on CUDA one stream is fed by ``threads - 1`` preparing processes."""
        from ..clap.embed import ClapEmbedder, max_batch_windows, pass_windows
        from ..clap.feeder import WindowFeeder

        if not files:  # every embedding came from the store: no torch, no model
            return
        cuda = self.device.startswith("cuda")
        workers = 1 if cuda else max(1, threads)
        plans, by_key = [], {}
        for file in files:
            try:
                plans.append(self.plan(file))
                by_key[file.content_key] = file
            except Exception as exc:  # noqa: BLE001 - a fault ends the job, anything else is the file's verdict
                if is_fault(exc):
                    raise
                yield file, exc
        limit = max_batch_windows(self.settings.max_batch_audio_seconds)
        windows = sum(len(plan.windows) for plan in plans)
        compiled = compile_wanted(self.settings.compile, self.device, windows)
        # The pool starts first: its interpreters start while this one imports torch and builds the model.
        feeder = WindowFeeder(plans, batch_windows=pass_windows(limit, workers, cuda), tail_workers=workers,
                              workers=preparation_processes(self.loader_processes, self.device, threads),
                              buffers=workers + 3)
        try:
            with profile.timer("setup"):  # importing torch is part of what a CLAP job pays to start
                loaded = self._load_model(workers=workers, threads=threads, compiled=compiled)
            embedder = ClapEmbedder(loaded, max_batch_windows=limit, workers=workers, fixed_shape=compiled,
                                    precision=clap_precision(self.device, self.settings),
                                    on_batch=(lambda n: progress.advance(files=0, units=n)) if progress else None)
            yield from self._embedded(embedder, feeder, by_key, profile)
        finally:
            feeder.close()
        profile.extra.update({"windows": embedder.stats.windows, "batches": embedder.stats.batches,
                              "oom_retries": embedder.stats.oom_retries, "device": loaded.device,
                              "precision": embedder.precision, "max_batch_windows": embedder.max_batch_windows,
                              "workers": embedder.workers, "compiled": compiled,
                              "loader_processes": feeder.processes, "peak_worker_rss_mb": feeder.worker_peak_rss_mb,
                              "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})

    def _embedded(self, embedder, feeder, by_key: dict, profile):
        """``(file, artifact or verdict)`` as the embedder finishes each file; the time the forward loop waits
        for prepared windows is ``clap_input_wait`` (a large one says preparation starves the model)."""
        started = time.perf_counter()
        batches = profile.timed_iter("clap_input_wait", feeder.batches())
        for content_key, output in embedder.embed_batches(batches):
            file = by_key[content_key]
            if isinstance(output, BaseException) and is_fault(output):
                raise output
            if isinstance(output, BaseException):
                yield file, Verdict(f"CLAP forward pass failed: {one_line(output)}")
            elif not np.isfinite(output).all():
                yield file, Verdict("CLAP produced a non-finite embedding")
            else:
                share = len(output) * embedder.stats.seconds / max(1, embedder.stats.windows)
                yield file, clap_artifact(output, feeder.plan_of(content_key), self.params.aggregate_mode,
                                          round(share, 6), feeder.weights.pop(content_key, None))
        profile.add("clap_forward", embedder.stats.seconds)
        profile.add("clap_loop", time.perf_counter() - started)
        profile.add("clap_preprocess", feeder.prepare_seconds)

    def _load_model(self, *, workers: int, threads: int, compiled: bool):
        import torch

        from .. import _speedups
        from ..clap.model import get_model

        if not self.device.startswith("cuda"):
            _speedups.retain_freed_memory()
        torch.set_num_threads(max(1, threads // workers))
        return get_model(self.params.model, self.checkpoint_path, self.params.weights, device=self.device,
                         compiled=compiled, compile_cache=self.compile_cache)

    def plan(self, file: DecodeRecord):
        return file_plan(file, *self.window_and_hop(), segment=self.params.segment_enabled,
                         weighted=self.params.aggregate_mode == "weighted")

    def column_types(self) -> dict:
        """``clap_embedding`` (EMBEDDING_DIM float32 values, as ``embeddings.npy``'s row), ``clap_windows``,
        ``clap_aggregate_mode``, and the rest of the block: ``clap_segments`` (``start_s``, ``end_s`` of each
        window), ``clap_aggregate_strategy`` (JSON), ``clap_model``, ``clap_weights``, ``clap_precision``,
        ``clap_segments_artifact``."""
        import pyarrow as pa

        span = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64())])
        return {"clap_embedding": pa.list_(pa.float32()), "clap_windows": pa.int32(),
                "clap_aggregate_mode": pa.string(), "clap_segments": pa.list_(span),
                "clap_aggregate_strategy": pa.string(), **{f"clap_{name}": pa.string() for name in _TEXT_FIELDS}}

    def columns(self, block: dict) -> dict:
        return {"clap_embedding": block["embedding"], "clap_windows": len(block["segments"]),
                "clap_aggregate_mode": block["aggregate_strategy"]["mode"], "clap_segments": block["segments"],
                "clap_aggregate_strategy": json.dumps(block["aggregate_strategy"], sort_keys=True),
                **{f"clap_{name}": block.get(name) for name in _TEXT_FIELDS}}

    @classmethod
    def block_of(cls, row: dict) -> dict:
        block = {name: row[f"clap_{name}"] for name in _TEXT_FIELDS if row[f"clap_{name}"] is not None}
        return {**block, "embedding": row["clap_embedding"], "segments": row["clap_segments"],
                "aggregate_strategy": json.loads(row["clap_aggregate_strategy"])}

    def block(self, store: ArtifactStore, content_key: str, stored: StoredArtifact, *, arrays: Any = None,
              kept: dict | None = None) -> dict:
        if kept is not None:
            block = {name: value for name, value in kept.items() if name != "segments_artifact"}
        elif arrays is not None:
            block = clap_block(arrays, self.params)
        else:
            with np.load(stored.path) as data:
                block = clap_block(data, self.params)
        if self.segment.save_segments:
            block["segments_artifact"] = segments_artifact(
                store, self.key(content_key), lambda: arrays["window_embeddings"] if arrays is not None
                else _npz_array(stored.path, "window_embeddings"))
        return block


def file_plan(file: DecodeRecord, window: int, hop: int, *, segment: bool, weighted: bool):
    """A decoded file's windows at the model's rate (:class:`~audiofeat.clap.feeder.FilePlan`), from its
    length in the decode table: nothing is read here, the feeder's workers read each window when its batch
    is made, so memory follows the batches, not the file."""
    from ..clap.feeder import FilePlan
    from ..clap.windows import plan_windows

    sr, frames = file.audio.get("target_sr"), file.samples
    if frames is None or sr is None:  # a table that does not record them: the WAV's header says
        from ..inputs.wav import WavReader

        with WavReader(file.wav) as wav:
            sr, frames = wav.samplerate, wav.frames
    if sr != MODEL_SAMPLE_RATE:  # another audio.target_sr: the length soxr's resampling to 48 kHz gives
        from ..inputs.media import resample

        frames = len(resample(np.zeros(frames, dtype=np.float32), sr, MODEL_SAMPLE_RATE))
    windows = tuple(plan_windows(max(1, frames), window, hop, segment=segment))
    return FilePlan(file.content_key, file.wav, windows, window, weighted)


_TEXT_FIELDS = ("model", "weights", "precision", "segments_artifact")  # the block's strings (the last optional)


def clap_artifact(output: np.ndarray, plan, aggregate_mode: str, seconds: float,
                  weights: list | None = None) -> Computed:
    """A file's CLAP artifact from its window embeddings ``[shape=(k, EMBEDDING_DIM)]`` and its
    :class:`~audiofeat.clap.feeder.FilePlan`: the aggregated embedding, the window embeddings, the windows'
    spans in seconds and the aggregation record, as one ``.npz``. ``weights``: the windows' active fractions
    (weighted mode)."""
    from ..clap.windows import aggregate

    embedding, strategy = aggregate(output, aggregate_mode, None if weights is None else np.asarray(weights))
    segments = np.array([[w.start / MODEL_SAMPLE_RATE, w.end / MODEL_SAMPLE_RATE] for w in plan.windows])
    arrays = {"embedding": embedding, "window_embeddings": output.astype(np.float32), "segments": segments,
              "strategy": np.array(json.dumps(strategy))}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return Computed(buffer.getvalue(), {"seconds": seconds}, arrays)


def clap_block(data, params: ClapParams) -> dict:
    """A manifest's ``clap`` block from a CLAP artifact's arrays (``segments_artifact`` is added apart)."""
    return {"model": params.model, "weights": params.weights, "precision": params.precision,
            "embedding": np.asarray(data["embedding"]).tolist(),  # exact: each float32 as a Python float
            "segments": [{"start_s": round(float(a), 6), "end_s": round(float(b), 6)} for a, b in data["segments"]],
            "aggregate_strategy": json.loads(str(data["strategy"]))}


def _npz_array(path, name: str) -> np.ndarray:
    with np.load(path) as data:
        return data[name]


def segments_artifact(store: ArtifactStore, key: ArtifactKey, window_embeddings: Callable[[], np.ndarray]) -> str:
    """Path of the per-window embeddings ``[shape=(windows, EMBEDDING_DIM)]`` stored beside the CLAP artifact ``key``;
    ``window_embeddings`` returns them, and is called only when they must be stored."""
    seg_key = ArtifactKey(key.content_key, "clap_segments", key.version, key.params_hash, ".npy")
    found = store.get(seg_key)
    if found:
        return str(found.path)
    buffer = io.BytesIO()
    np.save(buffer, window_embeddings())
    return str(store.put(seg_key, buffer.getvalue(), {}).path)
