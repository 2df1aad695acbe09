"""Thread claims by pending work: a shard job claims no more threads than it has files or CLAP windows to compute."""
import dataclasses

from audiofeat.clap.checkpoint import checkpoint_sha256
from audiofeat.config.schema import validate_config
from audiofeat.extractors import DecodeExtractor, build_extractors, section_schemas
from audiofeat.inputs.inventory import write_tsv
from audiofeat.extractors.runner import open_store
from audiofeat.extractors.scheduling import pending_work, shard_job_threads
from audiofeat.config.settings import Settings
from audiofeat.store.tables import write_jsonl


def _settings(tmp_path, **clap) -> Settings:
    return Settings.from_config(validate_config({
        "input_dir": str(tmp_path), "cache": {"dir": str(tmp_path / "cache")}, "perf": {"device": "cpu"},
        "clap": {"checkpoint": "", "allow_random_weights": True, **clap}}, sections=section_schemas()))


def _tables(tmp_path, durations):
    keys = [f"{i:02d}" * 16 for i in range(len(durations))]
    shard = tmp_path / "shard.tsv"
    write_tsv(shard, ("content_key", "path"), [{"content_key": k, "path": f"/in/{k}.wav"} for k in keys])
    ingest = tmp_path / "ingest.jsonl"
    write_jsonl(ingest, [{"content_key": k, "path": k, "status": "ok", "audio": {"duration_s": d}}
                         for k, d in zip(keys, durations)] + [{"content_key": "ff" * 16, "path": "x", "status": "error"}])
    return keys, shard, ingest


def test_pending_work_counts_what_the_store_lacks(tmp_path):
    settings = _settings(tmp_path)
    decoder, extractors = DecodeExtractor.from_settings(settings), build_extractors(settings)
    features, clap = extractors["features"], extractors["clap"]
    keys, shard, ingest = _tables(tmp_path, [1.0, 23.0, 4.0])  # 1, 4 and 1 CLAP windows (10 s, hop 5 s)
    store = open_store(settings)
    assert pending_work(decoder, shard, settings) == 3
    assert pending_work(features, ingest, settings) == 3  # the failed row is not work
    assert pending_work(clap, ingest, settings) == 6
    store.put(decoder.key(keys[0]), b"x")
    store.put(features.key(keys[1]), b"x")
    store.put(clap.key(keys[1]), b"x")
    assert pending_work(decoder, shard, settings) == 2
    assert pending_work(features, ingest, settings) == 2
    assert pending_work(clap, ingest, settings) == 2
    # Another precision's artifact is not this run's.
    half = type(clap)(dataclasses.replace(clap.params, precision="fp16-autocast"),
                      wav_params_hash=clap.wav_params_hash)
    store.put(half.key(keys[0]), b"x")
    assert pending_work(clap, ingest, settings) == 2
    assert shard_job_threads(clap, ingest, settings, 8) == 2
    assert shard_job_threads(features, ingest, settings, 1) == 1


def test_threads_claim_everything_when_the_work_is_unknown(tmp_path):
    settings = _settings(tmp_path)
    features = build_extractors(settings)["features"]
    keys, shard, ingest = _tables(tmp_path, [1.0, 1.0])
    store = open_store(settings)
    for key in keys:
        store.put(features.key(key), b"x")
    assert shard_job_threads(features, ingest, settings, 4) == 1  # nothing to do still claims one thread
    assert shard_job_threads(features, tmp_path / "not-written-yet.jsonl", settings, 4) == 4
    disabled = dataclasses.replace(settings, cache=dataclasses.replace(settings.cache, enabled=False))
    assert pending_work(features, ingest, disabled) == 2  # a disabled store is never read


def test_clap_work_with_a_checkpoint_whose_digest_is_not_remembered_yet(tmp_path):
    checkpoint = tmp_path / "clap.pt"
    checkpoint.write_bytes(b"not hashed by the scheduler" * 1000)
    settings = _settings(tmp_path, checkpoint=str(checkpoint), allow_random_weights=False)
    keys, _, ingest = _tables(tmp_path, [1.0, 1.0])
    assert build_extractors(settings)["clap"].key(keys[0]) is None  # digest unknown here: every file counts
    assert pending_work(build_extractors(settings)["clap"], ingest, settings) == 2
    checkpoint_sha256(checkpoint, tmp_path / "cache" / "checkpoints")  # what the workflow or a job remembers
    clap = build_extractors(settings)["clap"]
    open_store(settings).put(clap.key(keys[0]), b"x")
    assert pending_work(clap, ingest, settings) == 1
