"""Shard tables: records survive a write and a read unchanged, and only set fields are written."""
import json

from audiofeat.store.tables import ExtractRecord, DecodeRecord, read_table, write_table


def test_shard_records_round_trip_through_their_tables(tmp_path):
    ingest = [DecodeRecord("ab" * 16, "/in/a.wav", "ok", samples=48000, seconds=0.1, cache_hit=False,
                           audio={"duration_s": 1.0, "sample_rate": 16000, "channels": 1, "codec": "pcm_s16le",
                                  "container": "wav", "target_sr": 48000, "wav": "/store/a.wav"},
                           extractor={"version": "1", "params_hash": "0" * 16}),
              DecodeRecord("cd" * 16, "/in/b.mp3", "error", error="decode: not media", artifact="/store/v.txt")]
    extract = [ExtractRecord("ab" * 16, "ok", artifact="/store/a.npz", artifact_digest="f" * 32, seconds=0.5,
                             cache_hit=True, extractor={"version": "1", "params_hash": "1" * 16},
                             block={"embedding": [0.25, -1.0]}),
               ExtractRecord("cd" * 16, "skipped")]
    for records, kind in ((ingest, DecodeRecord), (extract, ExtractRecord)):
        path = tmp_path / f"{kind.__name__}.jsonl"
        write_table(path, records)
        assert read_table(path, kind) == records
    lines = [json.loads(line) for line in (tmp_path / "ExtractRecord.jsonl").read_text().splitlines()]
    assert lines[1] == {"content_key": "cd" * 16, "status": "skipped"}  # no nulls written
    assert ingest[0].ok and ingest[0].wav == "/store/a.wav" and ingest[0].duration_s == 1.0 and not ingest[1].ok
