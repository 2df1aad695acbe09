"""The workflow's stages as plain functions over shard tables (Snakemake's scripts only call these).

Each shard job reads its shard's table, looks every artifact up in the store, computes only what is missing,
and writes one JSON line per content key. Per-file failures become ``status: "error"`` lines with a one-line
reason; the job itself succeeds so that the rest of the run goes on.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import orjson

from . import __version__
from .decode import (DECODE_VERSION, DecodeError, InputUnreadable, decode_params, decode_source, read_wav, resample,
                     wav_bytes)
from .faults import Fault, InputChanged, is_fault
from .inventory import input_signature, read_tsv
from .manifest import path_text
from .profiling import JobProfile
from .store import (ArtifactKey, ArtifactStore, atomic_write_bytes, atomic_write_text, blake2b_bytes, keep_copy,
                    params_hash)

logger = logging.getLogger(__name__)


def open_store(config: dict) -> ArtifactStore:
    """The configured store; with ``cache.enabled: false`` a run-private folder that is never read back."""
    if config["cache"]["enabled"]:
        return ArtifactStore(config["cache"]["dir"], reuse=True)
    return ArtifactStore(Path(config["results_dir"]) / "work", reuse=False)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]


def json_line(record: dict) -> bytes:
    """One sorted-key JSON line. orjson: the stdlib encoder spent most of a 2,000-file finalize in float
    formatting. orjson writes NaN as null, so every stage checks its numbers are finite where it makes them."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    atomic_write_bytes(path, b"".join(json_line(r) for r in records))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------------------ ingest
def ingest_key(content_key: str, target_sr: int) -> ArtifactKey:
    return ArtifactKey(content_key, "wav", DECODE_VERSION, params_hash(decode_params(target_sr)), ".wav")


def features_key(content_key: str, config: dict) -> ArtifactKey:
    """Store key of a file's features: its content, the features version and parameters, and its WAV's."""
    from .features import FEATURES_VERSION, features_params

    sr = config["audio"]["target_sr"]
    phash = params_hash({**features_params(config["features"], sr), "wav": ingest_key("", sr).params_hash})
    return ArtifactKey(content_key, "features", FEATURES_VERSION, phash, ".json")


def clap_key(content_key: str, config: dict, *, weights: str, precision: str) -> ArtifactKey:
    """Store key of a file's CLAP embeddings: its content, the CLAP version and parameters (weights identity and
    precision included), and its WAV's."""
    from .clap import CLAP_VERSION, clap_params

    params = clap_params(config["clap"], config["segment"], weights=weights, precision=precision)
    phash = params_hash({**params, "wav": ingest_key("", config["audio"]["target_sr"]).params_hash})
    return ArtifactKey(content_key, "clap", CLAP_VERSION, phash, ".npz")


def verdict_key(wav_key: ArtifactKey) -> ArtifactKey:
    """Where the decoder's verdict on bytes that give no WAV is kept, beside the WAV they would have given."""
    return dataclasses.replace(wav_key, extractor="decode_verdict", suffix=".txt")


def check_unchanged(row: dict) -> None:
    """Raise :class:`InputChanged` unless the input's stat is the one its content key was hashed under."""
    try:
        now = input_signature(os.stat(row["path"]))
    except OSError:
        raise InputChanged(row["path"]) from None
    if row.get("stat") and now != row["stat"]:
        raise InputChanged(row["path"])


def run_ingest(shard_tsv: str, out_jsonl: str, profile_json: str, config: dict, threads: int = 1) -> JobProfile:
    """Decode every input of a shard to a mono WAV at ``audio.target_sr`` (or find it in the store), ``threads``
    files at a time: FFmpeg's decoders, soxr and the store's writes release the GIL.

    Only bytes whose stat is the one the inventory hashed are decoded, checked before and after decoding: a file
    that changed since is a fault (:class:`InputChanged`), so nothing is stored under a key its bytes do not have.
    A decoder's verdict is stored under the content key and reused; faults propagate and fail the job.
    """
    store = open_store(config)
    target_sr, decoder = config["audio"]["target_sr"], config["audio"]["decoder"]
    profile = JobProfile("ingest", Path(shard_tsv).stem, extra={"threads": threads})

    def failed(record: dict, message: str, artifact: Path | None = None) -> dict:
        logger.error("ingest: %s: %s", record["path"], message)
        return {**record, "status": "error", "error": f"decode: {message}",
                **({"artifact": str(artifact)} if artifact else {})}

    def ingest_one(row: dict) -> tuple[dict, bool]:
        """``(record, cache hit)`` for one input."""
        key = ingest_key(row["content_key"], target_sr)
        record = {"content_key": row["content_key"], "path": path_text(row["path"])}
        started = time.perf_counter()
        check_unchanged(row)
        found = store.get(key)
        if found:
            path, meta = found.path, found.meta
        elif known := store.get(verdict_key(key)):
            return failed(record, known.meta["error"], known.path), True
        else:
            verdict = None
            try:
                with profile.timer("decode"):
                    probe, y = decode_source(row["path"], decoder=decoder)
                with profile.timer("resample"):
                    y = resample(y, probe.sample_rate, target_sr)
            except InputUnreadable as exc:
                return failed(record, str(exc)), False
            except DecodeError as exc:
                verdict = str(exc)
            except Exception as exc:  # noqa: BLE001 - classified: a fault stops the job, anything else is this file's
                if is_fault(exc):
                    raise
                return failed(record, one_line(exc)), False
            check_unchanged(row)  # samples or a verdict from bytes the key does not name would poison the store
            if verdict is not None:
                return failed(record, verdict, store.put(verdict_key(key), b"", {"error": verdict}).path), False
            meta = {"probe": probe.__dict__, "samples": int(y.shape[0]),
                    "seconds": round(time.perf_counter() - started, 6)}
            with profile.timer("write"):
                path = store.put(key, wav_bytes(y, target_sr), meta).path
        probe = meta["probe"]
        return {**record, "status": "ok", "samples": meta["samples"],
                "audio": {**probe, "target_sr": target_sr, "wav": str(path)},
                "seconds": meta.get("seconds", 0.0), "cache_hit": bool(found),
                "extractor": {"version": DECODE_VERSION, "params_hash": key.params_hash}}, bool(found)

    records = []
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ingest") as pool:
        for record, hit in pool.map(ingest_one, read_tsv(shard_tsv)):
            records.append(record)
            profile.files += 1
            profile.cache_hits += hit
            profile.cache_misses += not hit
            if record["status"] == "ok":
                profile.audio_seconds += record["audio"]["duration_s"]
            else:
                profile.failed += 1
    with profile.timer("write"):
        write_jsonl(out_jsonl, records)
    profile.write(profile_json)
    return profile


# ---------------------------------------------------------------------------------------------- features
def run_features(ingest_jsonl: str, out_jsonl: str, profile_json: str, config: dict, threads: int) -> JobProfile:
    """Log-mel/MFCC statistics of every decoded file of a shard, ``threads`` files at a time."""
    from .features import FEATURES_VERSION, extract_features, features_params

    store = open_store(config)
    params = features_params(config["features"], config["audio"]["target_sr"])
    template = features_key("", config)  # one parameter hash for the shard; each file's key differs in content
    phash = template.params_hash
    profile = JobProfile("features", Path(ingest_jsonl).stem, extra={"threads": threads})
    lock = threading.Lock()

    def one(row: dict) -> dict:
        record = {"content_key": row["content_key"]}
        if row["status"] != "ok":
            return {**record, "status": "skipped"}
        key = dataclasses.replace(template, content_key=row["content_key"])
        found = store.get(key)
        if found:
            stored = found
        else:
            try:
                y, _ = read_wav(row["audio"]["wav"])
                t0 = time.perf_counter()
                block = extract_features(y, params)
                compute = time.perf_counter() - t0
                if not all(np.isfinite(v).all() for part in ("mel", "mfcc") for v in block[part].values()):
                    raise ValueError("non-finite statistics")
                # The artifact is the manifest's features block, byte for byte (finalize inserts it unparsed).
                stored = store.put(key, orjson.dumps(block, option=orjson.OPT_SORT_KEYS), {"seconds": round(compute, 6)})
            except Exception as exc:  # noqa: BLE001 - one file's verdict must not stop the shard; a fault does
                if is_fault(exc):
                    raise
                logger.error("features: %s: %s", row["path"], one_line(exc))
                return {**record, "status": "error", "error": f"features: {one_line(exc)}"}
            with lock:
                profile.seconds["features"] += compute
        with lock:
            profile.audio_seconds += row["audio"]["duration_s"]
        return {**record, "status": "ok", "seconds": stored.meta.get("seconds", 0.0), "cache_hit": bool(found),
                "artifact": str(stored.path), "artifact_digest": stored.digest,
                "extractor": {"version": FEATURES_VERSION, "params_hash": phash}}

    rows = read_jsonl(ingest_jsonl)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        records = list(pool.map(one, rows))
    profile.files = sum(1 for r in records if r["status"] != "skipped")
    profile.failed = sum(1 for r in records if r["status"] == "error")
    profile.cache_hits, profile.cache_misses = store.hits, store.misses
    with profile.timer("write"):
        write_jsonl(out_jsonl, records)
    profile.write(profile_json)
    return profile


# -------------------------------------------------------------------------------------------------- CLAP
def run_clap(ingest_jsonl: str, out_jsonl: str, profile_json: str, config: dict, threads: int = 1, *,
             previous_jsonl: str | None = None) -> JobProfile:
    """CLAP embeddings of every decoded file of a shard: cached ones read back, the rest micro-batched while a
    loader thread prepares the next files' windows. On CPU, ``threads`` single-threaded forward passes run at
    once; on CUDA one stream gets ``threads`` CPU threads.

    ``previous_jsonl`` keeps a copy of the shard's table from one run to the next (Snakemake deletes the declared
    output before the job): a cached file whose artifact is the one that table names, digest included, takes its
    block from there rather than reopening its ``.npz`` (1,000 of those took 0.3 s here; the table 0.05 s).
    """
    from .clap import clap_precision
    from .clap.model import MODEL_INPUT_SAMPLES, MODEL_SAMPLE_RATE, resolve_device, resolve_weights
    from .clap.windows import active_fraction, aggregate, model_inputs, plan_windows, window_and_hop

    store = open_store(config)
    clap_cfg, seg_cfg = config["clap"], config["segment"]
    profile = JobProfile("clap", Path(ingest_jsonl).stem, extra={"threads": threads})
    rows = read_jsonl(ingest_jsonl)
    ok_rows = [r for r in rows if r["status"] == "ok"]
    with profile.timer("setup"):
        checkpoint_path, weights = resolve_weights(
            clap_cfg["checkpoint"], allow_random_weights=clap_cfg["allow_random_weights"],
            model_name=clap_cfg["model"], cache_dir=config["cache"]["dir"],
            remember_digest=config["cache"]["enabled"])
        device = resolve_device(config["perf"]["device"])
    precision = clap_precision(device, clap_cfg["enable_amp"])
    template = clap_key("", config, weights=weights, precision=precision)
    window, hop = window_and_hop(seg_cfg, MODEL_SAMPLE_RATE)
    extractor = {"version": template.version, "params_hash": template.params_hash}

    results: dict[str, dict] = {}
    artifacts: dict[str, tuple[str, str]] = {}  # content key -> (artifact path, digest)
    previous = _previous_clap_records(previous_jsonl)
    # Per file, what its embedding cost when it was computed (stored with it: a cache hit keeps the figure, so a
    # rerun leaves the file's manifest as it was).
    clap_seconds: dict[str, float] = {}
    todo = []
    for row in ok_rows:
        key = dataclasses.replace(template, content_key=row["content_key"])
        found = store.get(key)
        if found:
            artifact = (str(found.path), found.digest)
            kept = previous.get(row["content_key"])
            if kept and (kept["artifact"], kept.get("artifact_digest")) == artifact:
                block = {name: value for name, value in kept["clap"].items() if name != "segments_artifact"}
            else:
                with np.load(found.path) as data:
                    block = _clap_block(data, clap_cfg["model"], weights, precision)
            if seg_cfg["save_segments"]:
                block["segments_artifact"] = _segments_artifact(
                    store, key, lambda path=found.path: _npz_array(path, "window_embeddings"))
            results[row["content_key"]] = block
            artifacts[row["content_key"]] = artifact
            clap_seconds[row["content_key"]] = found.meta.get("seconds", 0.0)
            profile.audio_seconds += row["audio"]["duration_s"]
        else:
            todo.append((row, key))
    profile.cache_hits, profile.cache_misses = store.hits, store.misses

    if todo:
        from .clap.embed import ClapEmbedder, max_batch_windows, ordered_prefetch, retain_freed_memory
        from .clap.model import get_model

        workers = 1 if device.startswith("cuda") else max(1, threads)
        if not device.startswith("cuda"):
            retain_freed_memory()
        with profile.timer("setup"):  # importing torch is part of what a CLAP job pays to start
            import torch

            torch.set_num_threads(max(1, threads // workers))
            loaded = get_model(clap_cfg["model"], checkpoint_path, weights, device=device)
        embedder = ClapEmbedder(loaded, max_batch_windows=max_batch_windows(clap_cfg["max_batch_audio_seconds"]),
                                enable_amp=clap_cfg["enable_amp"], workers=workers)
        prepared: queue.Queue = queue.Queue(maxsize=2 * embedder.max_batch_windows)
        plans: dict[str, tuple] = {}
        load_errors: dict[str, str] = {}
        fault: list[BaseException] = []  # the loader's, raised by the job once the forward loop has stopped

        def prepare(job):
            row, key = job
            try:
                t0 = time.perf_counter()
                y, sr = read_wav(row["audio"]["wav"])
                if sr != MODEL_SAMPLE_RATE:  # only when audio.target_sr is not CLAP's 48 kHz
                    y = resample(y, sr, MODEL_SAMPLE_RATE)
                windows = plan_windows(len(y), window, hop, segment=seg_cfg["enabled"])
                inputs = model_inputs(y, windows, MODEL_INPUT_SAMPLES)
                # Only the weighted mode reads them (a third of this preparation's time otherwise).
                weights_ = [active_fraction(y, w, window, MODEL_SAMPLE_RATE) for w in windows] \
                    if seg_cfg["aggregate_mode"] == "weighted" else None
                return row, key, (windows, weights_), inputs, time.perf_counter() - t0, None
            except Exception as exc:  # noqa: BLE001 - a verdict is recorded per file, a fault ends the job
                return row, key, None, None, 0.0, exc

        def loader():
            # Runs beside the forward passes (torch releases the GIL while the model computes); on CUDA with one
            # preparing thread per CPU thread of the job, so that the GPU is not starved.
            loaders = max(1, threads) if device.startswith("cuda") else 1  # on CPU the forward needs the cores
            try:
                for row, key, plan, inputs, seconds, error in ordered_prefetch(
                        prepare, todo, workers=loaders, depth=2 * loaders):
                    profile.seconds["clap_preprocess"] += seconds
                    if error is not None and is_fault(error):
                        fault.append(error)
                        return
                    if error is not None:
                        load_errors[row["content_key"]] = one_line(error)
                    else:
                        plans[row["content_key"]] = (*plan, key)
                        prepared.put((row["content_key"], inputs))
            finally:
                prepared.put(None)  # the forward loop must never wait on a loader that died

        def items():
            # How long the forward loop waits for prepared windows: with a low model-busy fraction, a large wait
            # says preparation (reading, windowing) starves the model; a small one points at the rest of the loop.
            while True:
                with profile.timer("clap_input_wait"):
                    item = prepared.get()
                if item is None:
                    return
                yield item

        thread = threading.Thread(target=loader, name="clap-loader", daemon=True)
        started = time.perf_counter()
        thread.start()
        def finish(content_key, output, windows, weights_, key):
            embedding, strategy = aggregate(output, seg_cfg["aggregate_mode"],
                                            None if weights_ is None else np.asarray(weights_))
            segments = np.array([[w.start / MODEL_SAMPLE_RATE, w.end / MODEL_SAMPLE_RATE] for w in windows])
            arrays = {"embedding": embedding, "window_embeddings": output.astype(np.float32), "segments": segments,
                      "strategy": np.array(json.dumps(strategy))}
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            # The file's share of the forward passes, by its windows, at the job's mean cost per window so far.
            share = round(len(windows) * embedder.stats.seconds / max(1, embedder.stats.windows), 6)
            t0 = time.perf_counter()
            stored = store.put(key, buffer.getvalue(), {"seconds": share})
            # The block comes from the arrays in hand, as a cache hit builds it from the stored ones.
            block = _clap_block(arrays, clap_cfg["model"], weights, precision)
            if seg_cfg["save_segments"]:
                block["segments_artifact"] = _segments_artifact(store, key, lambda: arrays["window_embeddings"])
            return content_key, block, (str(stored.path), stored.digest), share, time.perf_counter() - t0

        # Artifacts are written (fsync included) by a pool, so the device never waits for the disk.
        with ThreadPoolExecutor(max(2, threads), thread_name_prefix="clap-writer") as writer:
            written = []
            for content_key, output in embedder.embed_stream(items()):
                if isinstance(output, BaseException) and is_fault(output):
                    raise output
                if isinstance(output, BaseException):
                    load_errors[content_key] = f"CLAP forward pass failed: {one_line(output)}"
                    continue
                windows, weights_, key = plans.pop(content_key)
                if not np.isfinite(output).all():
                    load_errors[content_key] = "CLAP produced a non-finite embedding"
                    continue
                written.append(writer.submit(finish, content_key, output, windows, weights_, key))
            for future in written:
                content_key, block, artifact, share, write_seconds = future.result()
                results[content_key] = block
                artifacts[content_key] = artifact
                clap_seconds[content_key] = share
                profile.seconds["write"] += write_seconds
        thread.join()
        if fault:
            raise fault[0]
        profile.seconds["clap_forward"] += embedder.stats.seconds
        profile.seconds["clap_loop"] += time.perf_counter() - started
        profile.extra.update({"windows": embedder.stats.windows, "batches": embedder.stats.batches,
                              "oom_retries": embedder.stats.oom_retries, "device": loaded.device,
                              "precision": embedder.precision, "max_batch_windows": embedder.max_batch_windows,
                              "workers": embedder.workers})
        profile.audio_seconds += sum(row["audio"]["duration_s"] for row, _ in todo if row["content_key"] in results)
    else:
        load_errors = {}

    records = []
    for row in rows:
        record = {"content_key": row["content_key"]}
        if row["status"] != "ok":
            records.append({**record, "status": "skipped"})
        elif row["content_key"] in results:
            path, digest = artifacts[row["content_key"]]
            records.append({**record, "status": "ok", "clap": results[row["content_key"]], "extractor": extractor,
                            "artifact": path, "artifact_digest": digest,
                            "seconds": clap_seconds.get(row["content_key"], 0.0)})
        else:
            error = load_errors.get(row["content_key"], "CLAP: no result")
            logger.error("clap: %s: %s", row["path"], error)
            records.append({**record, "status": "error", "error": f"clap: {error}"})
    profile.files = len(ok_rows)
    profile.failed = sum(1 for r in records if r["status"] == "error")
    with profile.timer("write"):
        write_jsonl(out_jsonl, records)
        if previous_jsonl:
            keep_copy(out_jsonl, previous_jsonl)
    profile.write(profile_json)
    return profile


def _previous_clap_records(path: str | None) -> dict[str, dict]:
    """The ok records of a shard's previous CLAP table by content key; empty when there is none or it is damaged
    (each record is checked against the store before use, so a stale one is only a missed shortcut)."""
    if not path:
        return {}
    try:
        return {r["content_key"]: r for r in read_jsonl(path) if r.get("status") == "ok"}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("clap: ignoring the previous table %s (%s)", path, one_line(exc))
        return {}


def _npz_array(path: Path, name: str) -> np.ndarray:
    with np.load(path) as data:
        return data[name]


def _clap_block(data, model: str, weights: str, precision: str) -> dict:
    """A manifest's ``clap`` block from a CLAP artifact's arrays (``segments_artifact`` is added apart)."""
    return {"model": model, "weights": weights, "precision": precision,
            "embedding": np.asarray(data["embedding"]).tolist(),  # exact: each float32 as a Python float
            "segments": [{"start_s": round(float(a), 6), "end_s": round(float(b), 6)} for a, b in data["segments"]],
            "aggregate_strategy": json.loads(str(data["strategy"]))}


def _segments_artifact(store: ArtifactStore, key: ArtifactKey, window_embeddings: Callable[[], np.ndarray]) -> str:
    """Path of the per-window embeddings ``[shape=(windows, 512)]`` stored beside the CLAP artifact ``key``;
    ``window_embeddings`` returns them, and is called only when they must be stored."""
    seg_key = ArtifactKey(key.content_key, "clap_segments", key.version, key.params_hash, ".npy")
    found = store.get(seg_key)
    if found:
        return str(found.path)
    buffer = io.BytesIO()
    np.save(buffer, window_embeddings())
    return str(store.put(seg_key, buffer.getvalue(), {}).path)


# ---------------------------------------------------------------------------------------------- finalize
def _manifest_relpath(relpath: str) -> str:
    return relpath + ".json"


def read_shard_tables(ingest: list[str], features: list[str], clap: list[str]) -> dict[str, dict[str, dict]]:
    """``{stage: {content key: record}}`` from every shard's table."""
    tables: dict[str, dict[str, dict]] = {}
    for stage, paths in (("ingest", ingest), ("features", features), ("clap", clap)):
        table = tables[stage] = {}
        for path in paths:
            for record in read_jsonl(path):
                table[record["content_key"]] = record
    return tables


class ArtifactGone(Fault):
    """A features artifact a shard table names is missing or damaged (another run's gc sharing the store)."""

    def __init__(self, content_key: str, artifact: str) -> None:
        super().__init__(f"features artifact {artifact} is gone from the store or damaged (another run's gc?)")
        self.content_key, self.artifact = content_key, artifact


def _features_artifact(content_key: str, record: dict) -> bytes:
    """The features artifact a features table names, checked against the digest the table recorded (hashing
    1,000 of them, 27 MB, takes about 40 ms); :class:`ArtifactGone` when it is missing or not those bytes."""
    try:
        data = Path(record["artifact"]).read_bytes()
    except FileNotFoundError:
        raise ArtifactGone(content_key, record["artifact"]) from None
    if blake2b_bytes(data) != record.get("artifact_digest"):
        raise ArtifactGone(content_key, record["artifact"])
    return data


def build_manifests(files_tsv: str, by_stage: dict[str, dict[str, dict]]) -> list[dict]:
    """One ``audio_manifest_v1`` dict per input path, in the inventory's order.

    The features block is the stored artifact's JSON, inserted unparsed (``orjson.Fragment``): parsing and
    re-serialising 1,000 of them (27 MB of numbers) was most of a finalize job's time. Each is checked against
    its recorded digest; a missing or damaged one raises :class:`ArtifactGone`.
    """
    from .manifest import AudioInfo, AudioManifest, ClapBlock, Source

    manifests = []
    for row in read_tsv(files_tsv):
        source = Source.of(row["path"], row["content_key"], int(row["size_bytes"]))
        stages = [by_stage[s].get(row["content_key"]) for s in ("ingest", "features", "clap")]
        error = row["error"] or next((r["error"] for r in stages if r and r["status"] == "error"), None)
        if not error and any(r is None for r in stages):
            error = "not processed (its shard job failed; see the logs)"
        extractors, timings = {}, {}
        for name, record in zip(("decode", "features", "clap"), stages):
            if record and "extractor" in record:
                extractors[name] = record["extractor"]
            if record and "seconds" in record:
                timings[name] = record["seconds"]
        features = None
        if not error:
            features = orjson.Fragment(_features_artifact(row["content_key"], stages[1]))
        if error:
            manifest = AudioManifest(source=source, status="error", audiofeat_version=__version__, error=error,
                                     extractors=extractors, timings=timings)
        else:
            ing, _, cl = stages
            manifest = AudioManifest(
                source=source, status="ok", audiofeat_version=__version__, audio=AudioInfo(**ing["audio"]),
                features=features, clap=ClapBlock(**cl["clap"]), extractors=extractors, timings=timings)
        manifests.append({"relpath": row["relpath"], "manifest": manifest.to_dict()})
    return manifests


def artifacts_in_use(tables: dict[str, dict[str, dict]]) -> set[str]:
    """Store paths the current run's shard tables refer to (garbage collection never removes these)."""
    used: set[str] = set()
    for table in tables.values():
        for record in table.values():
            if record.get("audio"):
                used.add(record["audio"]["wav"])
            if record.get("artifact"):
                used.add(record["artifact"])
            if record.get("clap", {}).get("segments_artifact"):
                used.add(record["clap"]["segments_artifact"])
    return used


class FinalizeResult(NamedTuple):
    """What :func:`run_finalize` wrote the summary of, and each input's path with its manifest's timings summed."""

    summary: dict
    file_seconds: list[tuple[str, float]]


def run_finalize(files_tsv: str, ingest: list[str], features: list[str], clap: list[str], *,
                 manifests_dir: str, manifest_jsonl: str, embeddings_npy: str, summary_json: str,
                 config: dict) -> FinalizeResult:
    """Write per-file manifests, the dataset-level JSONL and embedding matrix and the run summary, then bound
    the store (``cache.ttl_hours``, ``cache.max_gb``) without touching what this run uses."""
    tables = read_shard_tables(ingest, features, clap)
    try:
        entries = build_manifests(files_tsv, tables)
    except ArtifactGone as gone:
        # The features tables that name it are removed, so that the same command recomputes what they held.
        for table in features:
            if any(r["content_key"] == gone.content_key for r in read_jsonl(table)):
                Path(table).unlink()
        raise Fault(f"{gone}; its shard's features table was removed: rerun the same command") from None
    root = Path(manifests_dir)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    current = set()
    for entry in entries:
        line = json_line(entry["manifest"])
        path = root / _manifest_relpath(entry["relpath"])
        current.add(path)
        # Rewrite only what changed: after adding one file to a large run, one manifest is written, not all.
        try:
            unchanged = path.read_bytes() == line
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            atomic_write_bytes(path, line, durable=False)  # derived from manifest.jsonl: no fsync per file
        lines.append(line)
    for stale in root.rglob("*.json"):  # manifests of inputs that are gone
        if stale not in current:
            stale.unlink()
    atomic_write_bytes(manifest_jsonl, b"".join(lines))
    dim = next((len(e["manifest"]["clap"]["embedding"]) for e in entries if e["manifest"]["status"] == "ok"), 512)
    matrix = np.zeros((len(entries), dim), dtype=np.float32)  # rows of failed inputs stay zero
    for index, entry in enumerate(entries):
        if entry["manifest"]["status"] == "ok":
            matrix[index] = entry["manifest"]["clap"]["embedding"]
    buffer = io.BytesIO()
    np.save(buffer, matrix)

    atomic_write_bytes(embeddings_npy, buffer.getvalue())
    summary = {"ok": sum(1 for e in entries if e["manifest"]["status"] == "ok"),
               "failed": sum(1 for e in entries if e["manifest"]["status"] == "error"),
               **failure_summary(entries, Path(manifests_dir).name)}
    cache = config["cache"]
    if cache["enabled"] and (cache["ttl_hours"] or cache["max_gb"]):
        summary["cache_gc"] = ArtifactStore(cache["dir"]).collect_garbage(
            ttl_hours=cache["ttl_hours"], max_gb=cache["max_gb"],
            protect=artifacts_in_use(tables))
    atomic_write_text(summary_json, json.dumps(summary, indent=1, ensure_ascii=False))
    return FinalizeResult(summary, [(e["manifest"]["source"]["path"], sum(e["manifest"].get("timings", {}).values()))
                                    for e in entries])


FAILURES_LISTED_PER_CAUSE = 50


def failure_summary(entries: list[dict], manifests_folder: str) -> dict:
    """Failures grouped by cause (the error up to its first parenthesis), each with its first
    :data:`FAILURES_LISTED_PER_CAUSE` files and their manifests (relative to the results folder), and the count of
    the rest; ``failed_files`` lists every failed path."""
    by_cause: dict[str, dict] = {}
    failed = []
    for entry in entries:
        manifest = entry["manifest"]
        if manifest["status"] != "error":
            continue
        failed.append(manifest["source"]["path"])
        group = by_cause.setdefault(manifest["error"].split(" (")[0], {"count": 0, "files": []})
        group["count"] += 1
        if len(group["files"]) < FAILURES_LISTED_PER_CAUSE:
            link = f"{manifests_folder}/{path_text(_manifest_relpath(entry['relpath']))}"
            group["files"].append({"path": manifest["source"]["path"], "manifest": link})
    return {"failures_by_cause": {cause: g["count"] for cause, g in sorted(by_cause.items())},
            "failures": [{"cause": cause, "count": g["count"], "files": g["files"],
                          "more": g["count"] - len(g["files"])} for cause, g in sorted(by_cause.items())],
            "failed_files": failed}


def summary_line(summary: dict) -> str:
    return f"{summary['ok']} ok, {summary['failed']} failed"
