"""The run report: every failure named and linked, and advice from the run's own numbers (each rule fires on its
condition and stays quiet without it)."""
import json

import pytest

from audiofeat.report import advice
from audiofeat.report.html import stage_totals, write_report
from audiofeat.outputs.shard import FAILURES_LISTED_PER_CAUSE, ShardSummary
from audiofeat.outputs.curation import DISTRIBUTIONS, CurationCounts
from audiofeat.outputs.run import FinalizeResult, merged_curation, merged_summary

NO_CURATION = CurationCounts().to_dict()


def _profile(stage, wall=10.0, hits=0, misses=10, **seconds):
    return {"stage": stage, "shard": "n1-000", "wall_s": wall, "files": 10, "failed": 0, "audio_s": 100.0,
            "cache_hits": hits, "cache_misses": misses, "seconds": seconds, "peak_rss_mb": 100.0,
            "peak_gpu_mb": None, "workers": 1}


def _entry(name, status="ok", error=None):
    manifest = {"source": {"path": f"/in/{name}"}, "status": status, **({"error": error} if error else {})}
    return {"relpath": name, "manifest": manifest}


def failure_summary(entries, manifests_folder):
    """The failure keys of a run's summary, through a shard's summary (from its index) and the merge of shards."""
    rows = [{"path": e["manifest"]["source"]["path"], "relpath": e["relpath"]} for e in entries]
    index = {e["relpath"]: ["signature", "digest", e["manifest"]["status"], 0.0, e["manifest"].get("error"), [],
                            [None] * len(DISTRIBUTIONS)] for e in entries}
    summary = ShardSummary(manifests_folder)
    summary.add(rows, index)
    merged = merged_summary([summary.to_dict()], [])
    return {key: merged[key] for key in ("failures_by_cause", "failures", "failed_files")}


def test_failures_are_listed_per_cause_with_their_manifests_and_the_rest_counted():
    entries = [_entry(f"bad{i}.wav", "error", "decode: no audio stream") for i in range(60)]
    entries += [_entry("t.mp3", "error", "decode: truncated or corrupt audio after 1 samples (Invalid data)"),
                _entry("fine.wav")]
    summary = failure_summary(entries, "manifests")
    assert summary["failures_by_cause"] == {"decode: no audio stream": 60,
                                            "decode: truncated or corrupt audio after 1 samples": 1}
    no_audio = summary["failures"][0]
    assert no_audio["count"] == 60 and no_audio["more"] == 60 - FAILURES_LISTED_PER_CAUSE
    assert no_audio["files"][0] == {"path": "/in/bad0.wav", "manifest": "manifests/bad0.wav.json"}
    assert len(no_audio["files"]) == FAILURES_LISTED_PER_CAUSE and len(summary["failed_files"]) == 61


def _config(tmp_path, cache="cache", **settings):
    from audiofeat.config.settings import CacheSettings, PerfSettings, Settings

    return Settings(perf=PerfSettings(threads=2), cache=CacheSettings(dir=str(tmp_path / cache)),
                    results_dir=str(tmp_path / "results"), **settings)


def _report(tmp_path, profiles, summary, cache="cache", curation=NO_CURATION, **settings):
    paths = []
    for i, profile in enumerate(profiles):
        path = tmp_path / f"p{i}.json"
        path.write_text(json.dumps(profile))
        paths.append(str(path))
    html_path = tmp_path / "results" / "report" / "index.html"
    numbers = write_report(paths, FinalizeResult(summary, [], [], curation), _config(tmp_path, cache, **settings),
                           str(html_path),
                           str(tmp_path / "results" / "report" / "timings.tsv"),
                           str(tmp_path / "results" / "run_state.json"))
    return numbers, html_path.read_text(encoding="utf-8")


def test_report_links_each_failed_file_to_its_manifest(tmp_path):
    entries = [_entry(f"bad{i}.wav", "error", "decode: no audio stream") for i in range(55)]
    summary = {"ok": 0, "failed": 55, **failure_summary(entries, "manifests")}
    _, page = _report(tmp_path, [_profile("decode")], summary)
    assert "<a href='../manifests/bad0.wav.json'>/in/bad0.wav</a>" in page
    assert "<h3>decode: no audio stream: 55</h3>" in page and "and 5 more" in page
    assert "bad50.wav" not in page


def test_flagged_files_are_listed_per_reason_with_thresholds_and_each_main_number_is_a_histogram(tmp_path):
    """Two shards' rows through their summaries' counts and the run's merge, into the report."""
    from audiofeat.config.settings import FlagsSettings, Settings
    from audiofeat.outputs.curation import input_flags, main_numbers

    flags = FlagsSettings(clipping_ratio=0.01)
    loud = {"clipping_ratio": 0.0, "silent_frame_ratio": 0.0, "effective_bandwidth_hz": 20000.0,
            "sample_rate": 44100, "integrated_lufs": -20.0}
    manifests = [{"status": "ok", "audio": {"duration_s": 2.0 + i}, "speech": {"speech_ratio": 0.5},
                  "loudness": {**loud, "clipping_ratio": 0.02 if i < 53 else 0.0}} for i in range(60)]
    manifests[0]["loudness"]["effective_bandwidth_hz"] = 3900.0  # an 8 kHz recording at 44.1 kHz
    manifests[1]["speech"]["speech_ratio"] = 0.0
    shards = []
    for half in (manifests[:30], manifests[30:]):
        rows = [{"path": f"/in/f{id(m)}.wav", "relpath": f"f{id(m)}.wav"} for m in half]
        index = {row["relpath"]: ["s", "d", "ok", 0.0, None, input_flags(m, flags), main_numbers(m)]
                 for row, m in zip(rows, half)}
        summary = ShardSummary("manifests")
        summary.add(rows, index)
        shards.append(summary.to_dict())
    curation = merged_curation(shards)
    assert [(g["reason"], g["count"], g["more"]) for g in curation["flagged"]] == [
        ("clipped", 53, 3), ("upsampled", 1, 0), ("no speech", 1, 0)]
    assert sum(curation["distributions"]["Duration"]) == 60 and sum(curation["distributions"]["Median pitch"]) == 0
    assert merged_summary(shards, [])["flagged_by_reason"] == {"clipped": 53, "upsampled": 1, "no speech": 1}
    _, page = _report(tmp_path, [_profile("decode")], {"ok": 60, "failed": 0, **failure_summary([], "manifests")},
                      curation=curation, extractors=("loudness", "speech"), flags=flags)
    assert "<h3>clipped (loudness.clipping_ratio &gt;= 0.01): 53</h3>" in page and "and 3 more" in page
    first = curation["flagged"][1]["files"][0]
    assert f"<a href='../{first['manifest']}'>{first['path']}</a>" in page
    assert "<h3>Duration</h3><svg" in page and "<h3>Integrated loudness</h3><svg" in page
    assert "<h3>Median pitch</h3>" not in page  # pitch did not run
    assert "low speech quality" not in page  # speech_quality did not run: not judged
    assert Settings().flags == FlagsSettings()


def _facts(profiles, **kwargs):
    return advice.RunFacts(stage_totals(profiles), **kwargs)


STARVED = _profile("clap", wall=10.0, clap_forward=3.0, clap_loop=9.0, clap_input_wait=5.0, setup=0.5)
FED = _profile("clap", wall=10.0, clap_forward=9.0, clap_loop=9.5, clap_input_wait=0.1, setup=0.5)
SLOW_START = _profile("clap", wall=10.0, clap_forward=6.0, clap_loop=6.5, clap_input_wait=0.1, setup=3.5)


@pytest.mark.parametrize("rule, fires, quiet", [
    (advice.model_starved, _facts([STARVED]), _facts([FED])),
    (advice.startup_heavy, _facts([SLOW_START]), _facts([FED])),
    (advice.cpu_despite_gpu, _facts([FED], gpu_visible=True, clap_device="cpu"),
     _facts([FED], gpu_visible=False, clap_device="cpu")),
    (advice.cold_store_on_rerun, _facts([_profile("decode")], cache_dir="/b", previous_cache_dir="/a",
                                        rerun_lookups=(0, 10)),
     _facts([_profile("decode")], cache_dir="/b", previous_cache_dir="/a", rerun_lookups=(10, 0))),
    (advice.disk_nearly_full, _facts([FED], disk_free_bytes=2 * 1024**3, disk_total_bytes=100 * 1024**3),
     _facts([FED], disk_free_bytes=50 * 1024**3, disk_total_bytes=100 * 1024**3)),
])
def test_each_advice_rule_fires_on_its_condition_only(rule, fires, quiet):
    assert rule(fires) and rule(quiet) is None
    assert rule(fires) in advice.advise(fires) and rule(fires) not in advice.advise(quiet)


def test_a_first_run_gets_no_cold_store_advice_and_a_first_run_elsewhere_does(tmp_path):
    cold = [_profile("decode"), _profile("features")]
    numbers, page = _report(tmp_path, cold, {"ok": 10, "failed": 0, **failure_summary([], "manifests")})
    assert not any("Nothing came from the store" in a for a in numbers["advice"])  # no earlier run here
    numbers, page = _report(tmp_path, cold, {"ok": 10, "failed": 0, **failure_summary([], "manifests")},
                            cache="another-cache")
    assert any(f"cache.dir {tmp_path / 'cache'} (now {tmp_path / 'another-cache'})" in a for a in numbers["advice"])
    assert "point cache.dir (CACHE_DIR) back at it" in page
    # Finalize alone again (no shard job reran, their profiles are the cold run's): nothing to say about the store.
    html_path = tmp_path / "results" / "report" / "index.html"
    profiles = sorted(str(p) for p in tmp_path.glob("p*.json"))
    numbers = write_report(profiles, FinalizeResult({"ok": 10, "failed": 0, **failure_summary([], "manifests")}, [], [],
                                                     NO_CURATION),
                           _config(tmp_path, "another-cache"), str(html_path), str(html_path.with_name("t.tsv")),
                           str(tmp_path / "results" / "run_state.json"))
    assert not any("Nothing came from the store" in a for a in numbers["advice"])


def test_progress_lines_and_the_status_of_a_run_across_shards(tmp_path, caplog, capsys):
    import logging

    from audiofeat.cli import main
    from audiofeat.extractors.profiling import Progress

    results = tmp_path / "results"
    for shard in ("n2-000", "n2-001"):
        (results / "bookkeeping" / "inventory" / "shards").mkdir(parents=True, exist_ok=True)
        (results / "bookkeeping" / "inventory" / "shards" / f"{shard}.tsv").write_text("content_key\tpath\n")
    # decode: both shards done; clap: one done, one running (its progress file, no profile yet).
    for stage, shard in (("decode", "n2-000"), ("decode", "n2-001"), ("clap", "n2-000")):
        path = results / "bookkeeping" / "timings" / stage / f"{shard}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"wall_s": 30.0}))
    with caplog.at_level(logging.INFO, logger="audiofeat.progress"):
        progress = Progress("clap", "n2-001", files=10, units=40, unit_name="windows", every_s=0.0,
                            path=str(results / "bookkeeping" / "progress" / "clap" / "n2-001.json"))
        for _ in range(4):
            progress.advance(units=4)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1].startswith("clap n2-001: 4/10 files, 16/40 windows, ")
    assert "files/s, ETA " in lines[-1]
    assert main(["status", str(results)]) == 0
    out = capsys.readouterr().out
    assert "2 shards" in out and "decode     2 done, 0 running, 0 failed, 0 not started" in out
    assert "clap       1 done, 1 running, 0 failed, 0 not started, 4/10 files" in out and "min left" in out
    # The running job fails: its log ends in the fault line the job prints.
    log = results / "bookkeeping" / "logs" / "extract_clap" / "n2-001.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-12-03 ERROR audiofeat.job: fault: cache.dir /x is full: 0 bytes free\n")
    assert main(["status", str(results)]) == 1
    assert "clap       1 done, 0 running, 1 failed" in capsys.readouterr().out
    progress.finish()
    assert json.loads((results / "bookkeeping" / "progress" / "clap" / "n2-001.json").read_text())["state"] == "done"
