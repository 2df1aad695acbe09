"""CLAP embeddings as an extractor: LAION's HTSAT audio tower over deterministic windows, micro-batched across
files while a loader thread prepares the next files' windows.

The job's pieces: :func:`prepare_file` (a WAV to model-ready windows), :class:`WindowFeeder` (preparation
beside the forward passes), :meth:`ClapExtractor.compute` (the embedding stream), :func:`clap_artifact`
(a file's result as a stored ``.npz``) and :func:`clap_block` (its manifest block). Lookup and storing are the
shard runner's, as for every extractor. Nothing here imports torch until a file has to be embedded.
"""
from __future__ import annotations

import io
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..clap import MODEL_INPUT_SAMPLES, MODEL_SAMPLE_RATE
from ..clap.windows import Window
from ..faults import Verdict, is_fault, one_line
from ..store import ArtifactKey, ArtifactStore, StoredArtifact
from ..tables import IngestRecord
from .base import Computed, Extractor


EMBEDDING_DIM = 512  # LAION CLAP's joint embedding space


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


def clap_precision(device: str, enable_amp: bool) -> str:
    """Precision of the forward passes: autocast to float16 on CUDA when ``enable_amp``, else float32."""
    return "fp16-autocast" if enable_amp and device.startswith("cuda") else "fp32"


@dataclass(frozen=True)
class PreparedFile:
    """A file's model-ready windows ``[shape=(k, 480000)]`` (an array, or a :class:`WavWindows` read when
    needed), where they lie in it, and (weighted mode) how much of each is real, non-silent audio."""

    file: IngestRecord
    inputs: Any
    windows: list
    weights: list | None


class ClapExtractor(Extractor):
    name = "clap"
    version = "1"  # bump when embeddings change for the same audio, weights and parameters
    suffix = ".npz"
    inline_block = True
    reports_progress = True  # windows as their batches finish: a ten-hour file says how far it is
    work_unit_name = "windows"
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
                 checkpoint_path: str | None = None, device: str = "cpu") -> None:
        super().__init__(params, wav_params_hash=wav_params_hash)
        self.settings, self.segment = clap, segment
        self.checkpoint_path, self.device = checkpoint_path, device

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "ClapExtractor":
        """In the job, the weights are resolved (a checkpoint hashed once by its stat, or downloaded) and the
        device is torch's; in the workflow's process neither imports torch nor hashes (weights None while no
        digest is remembered, so every file counts as missing)."""
        from ..clap.checkpoint import known_weights, resolve_weights
        from ..clap.model import likely_device, resolve_device
        from .decode import DecodeExtractor

        clap, cache = settings.clap, settings.cache
        if job:
            path, weights = resolve_weights(clap, cache)
            device = resolve_device(settings.perf.device)
        else:
            path, device = None, likely_device(settings.perf.device)
            weights = known_weights(clap, cache)
        segment = settings.segment
        params = ClapParams(clap.model, weights, clap_precision(device, clap.enable_amp), bool(segment.enabled),
                            float(segment.window_seconds), float(segment.hop_seconds), segment.aggregate_mode)
        return cls(params, wav_params_hash=DecodeExtractor.from_settings(settings).params_hash, clap=clap,
                   segment=segment, checkpoint_path=path, device=device)

    def key(self, content_key: str) -> ArtifactKey | None:
        return None if self.params.weights is None else super().key(content_key)

    def window_and_hop(self) -> tuple[int, int]:
        """``segment.window_seconds`` and ``segment.hop_seconds`` in samples at the model's rate."""
        return (int(round(self.params.window_seconds * MODEL_SAMPLE_RATE)),
                int(round(self.params.hop_seconds * MODEL_SAMPLE_RATE)))

    def work_units(self, file: IngestRecord) -> int:
        from ..clap.windows import plan_windows

        n = max(1, round(file.duration_s * MODEL_SAMPLE_RATE))
        return len(plan_windows(n, *self.window_and_hop(), segment=self.params.segment_enabled))

    def compute(self, files, *, threads, profile, progress=None
                ) -> Iterator[tuple[IngestRecord, Computed | BaseException]]:
        """Embeddings of ``files``, micro-batched; on the CPU ``threads`` single-threaded forward passes run at
        once, on CUDA one stream gets ``threads`` preparing threads."""
        from ..clap.embed import ClapEmbedder, max_batch_windows

        if not files:  # every embedding came from the store: no torch, no model
            return
        cuda = self.device.startswith("cuda")
        with profile.timer("setup"):  # importing torch is part of what a CLAP job pays to start
            loaded = self._load_model(workers=1 if cuda else max(1, threads), threads=threads)
        embedder = ClapEmbedder(loaded, max_batch_windows=max_batch_windows(self.settings.max_batch_audio_seconds),
                                enable_amp=self.settings.enable_amp, workers=1 if cuda else max(1, threads),
                                on_batch=(lambda windows: progress.advance(files=0, units=windows)) if progress else None)
        feeder = WindowFeeder(files, self.prepare, loaders=max(1, threads) if cuda else 1, profile=profile,
                              depth=2 * embedder.max_batch_windows)
        started = time.perf_counter()
        for content_key, output in embedder.embed_stream(feeder.items()):
            yield from feeder.failures()
            prepared = feeder.take(content_key)
            if isinstance(output, BaseException) and is_fault(output):
                raise output
            if isinstance(output, BaseException):
                yield prepared.file, Verdict(f"CLAP forward pass failed: {one_line(output)}")
            elif not np.isfinite(output).all():
                yield prepared.file, Verdict("CLAP produced a non-finite embedding")
            else:
                share = len(prepared.windows) * embedder.stats.seconds / max(1, embedder.stats.windows)
                yield prepared.file, clap_artifact(output, prepared, self.params.aggregate_mode, round(share, 6))
        feeder.join()
        yield from feeder.failures()
        profile.add("clap_forward", embedder.stats.seconds)
        profile.add("clap_loop", time.perf_counter() - started)
        profile.extra.update({"windows": embedder.stats.windows, "batches": embedder.stats.batches,
                              "oom_retries": embedder.stats.oom_retries, "device": loaded.device,
                              "precision": embedder.precision, "max_batch_windows": embedder.max_batch_windows,
                              "workers": embedder.workers})

    def _load_model(self, *, workers: int, threads: int):
        import torch

        from .. import _speedups
        from ..clap.model import get_model

        if not self.device.startswith("cuda"):
            _speedups.retain_freed_memory()
        torch.set_num_threads(max(1, threads // workers))
        return get_model(self.params.model, self.checkpoint_path, self.params.weights, device=self.device)

    def prepare(self, file: IngestRecord) -> PreparedFile:
        return prepare_file(file, *self.window_and_hop(), segment=self.params.segment_enabled,
                            weighted=self.params.aggregate_mode == "weighted")

    def column_types(self) -> dict:
        """``clap_embedding`` (512 float32 values, as ``embeddings.npy``'s row), ``clap_windows``
        and ``clap_aggregate_mode``."""
        import pyarrow as pa

        return {"clap_embedding": pa.list_(pa.float32()), "clap_windows": pa.int32(),
                "clap_aggregate_mode": pa.string()}

    def columns(self, block: dict) -> dict:
        return {"clap_embedding": block["embedding"], "clap_windows": len(block["segments"]),
                "clap_aggregate_mode": block["aggregate_strategy"]["mode"]}

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


def prepare_file(file: IngestRecord, window: int, hop: int, *, segment: bool, weighted: bool) -> PreparedFile:
    """A file's windows: a one-window clip read and prepared now; a longer file's windows read from its WAV one at
    a time, when a batch takes them (:class:`WavWindows`), so memory follows the batch, not the file."""
    from ..clap.windows import active_fraction, model_inputs, plan_windows
    from ..decode import resample
    from ..wav import WavReader, read_wav

    with WavReader(file.wav) as wav:
        n, sr = wav.frames, wav.samplerate
        windows = plan_windows(n, window, hop, segment=segment) if sr == MODEL_SAMPLE_RATE else None
        if windows is not None and len(windows) > 1:
            # Only the weighted mode reads them (a third of this preparation's time otherwise).
            weights = [active_fraction(wav.read(w.start, w.end), Window(0, w.end - w.start), window, sr)
                       for w in windows] if weighted else None
            return PreparedFile(file, WavWindows(file.wav, windows), windows, weights)
    y, sr = read_wav(file.wav)  # one window; or another audio.target_sr, resampled whole (the rate CLAP needs)
    if sr != MODEL_SAMPLE_RATE:
        y = resample(y, sr, MODEL_SAMPLE_RATE)
    windows = plan_windows(len(y), window, hop, segment=segment)
    weights = [active_fraction(y, w, window, MODEL_SAMPLE_RATE) for w in windows] if weighted else None
    return PreparedFile(file, model_inputs(y, windows, MODEL_INPUT_SAMPLES), windows, weights)


class WavWindows:
    """A file's model-ready windows as a sequence: ``windows[i]`` reads window ``i`` from the WAV and prepares it
    as :func:`~audiofeat.clap.windows.model_inputs` does (the int16 round trip is per sample, so cutting first
    gives the same values)."""

    def __init__(self, wav: str, windows: list) -> None:
        self.wav, self.windows = wav, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> np.ndarray:
        from ..clap.windows import int16_round_trip, repeat_pad
        from ..wav import WavReader

        window = self.windows[index]
        with WavReader(self.wav) as wav:
            return repeat_pad(int16_round_trip(wav.read(window.start, window.end)), MODEL_INPUT_SAMPLES)


class WindowFeeder:
    """Prepares files on a loader thread (``loaders`` preparing threads under it, in input order) while the
    forward passes run; :meth:`items` yields ``(content key, windows)`` for the embedder.

    A file whose preparation fails is handed back by :meth:`failures` as that file's verdict; a fault stops the
    loader and is raised by :meth:`join`.
    """

    def __init__(self, files: list[IngestRecord], prepare: Callable[[IngestRecord], PreparedFile], *,
                 loaders: int, profile, depth: int) -> None:
        self._prepared: queue.Queue = queue.Queue(maxsize=depth)
        self._plans: dict[str, PreparedFile] = {}
        self._failed: list[tuple[IngestRecord, BaseException]] = []
        self._fault: list[BaseException] = []
        self._lock = threading.Lock()
        self._profile = profile
        self._thread = threading.Thread(target=self._load, args=(files, prepare, loaders), name="clap-loader",
                                        daemon=True)
        self._thread.start()

    def _load(self, files, prepare, loaders: int) -> None:
        from ..clap.embed import ordered_prefetch

        def timed(file):
            started = time.perf_counter()
            try:
                return file, prepare(file), time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001 - a verdict is recorded per file, a fault ends the job
                return file, exc, 0.0

        try:
            for file, prepared, seconds in ordered_prefetch(timed, files, workers=loaders, depth=2 * loaders):
                self._profile.add("clap_preprocess", seconds)
                if isinstance(prepared, BaseException) and is_fault(prepared):
                    self._fault.append(prepared)
                    return
                if isinstance(prepared, BaseException):
                    with self._lock:
                        self._failed.append((file, prepared))
                    continue
                self._plans[file.content_key] = prepared
                self._prepared.put((file.content_key, prepared.inputs))
        finally:
            self._prepared.put(None)  # the forward loop must never wait on a loader that died

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        # The forward loop's wait for prepared windows: a large one says preparation starves the model.
        while True:
            with self._profile.timer("clap_input_wait"):
                item = self._prepared.get()
            if item is None:
                return
            yield item

    def take(self, content_key: str) -> PreparedFile:
        return self._plans.pop(content_key)

    def failures(self) -> list[tuple[IngestRecord, BaseException]]:
        with self._lock:
            failed, self._failed = self._failed, []
        return failed

    def join(self) -> None:
        self._thread.join()
        if self._fault:
            raise self._fault[0]


def clap_artifact(output: np.ndarray, prepared: PreparedFile, aggregate_mode: str, seconds: float) -> Computed:
    """A file's CLAP artifact from its window embeddings ``[shape=(k, 512)]``: the aggregated embedding, the
    window embeddings, the windows' spans in seconds and the aggregation record, as one ``.npz``."""
    from ..clap.windows import aggregate

    weights = None if prepared.weights is None else np.asarray(prepared.weights)
    embedding, strategy = aggregate(output, aggregate_mode, weights)
    segments = np.array([[w.start / MODEL_SAMPLE_RATE, w.end / MODEL_SAMPLE_RATE] for w in prepared.windows])
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
    """Path of the per-window embeddings ``[shape=(windows, 512)]`` stored beside the CLAP artifact ``key``;
    ``window_embeddings`` returns them, and is called only when they must be stored."""
    seg_key = ArtifactKey(key.content_key, "clap_segments", key.version, key.params_hash, ".npy")
    found = store.get(seg_key)
    if found:
        return str(found.path)
    buffer = io.BytesIO()
    np.save(buffer, window_embeddings())
    return str(store.put(seg_key, buffer.getvalue(), {}).path)
