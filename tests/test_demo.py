"""`make demo`, the README's first command: it finishes with the results the README lists, and a second run
finds nothing to do."""
import json
import os
import subprocess

from audiofeat.config.layout import BOOKKEEPING, USER_ENTRIES

from conftest import REPO


def _make_demo():
    env = {k: v for k, v in os.environ.items() if k not in ("AUDIOFEAT_EXTRACTORS", "CACHE_DIR", "PERF_THREADS")}
    done = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_make_demo_gives_the_results_the_readme_lists_and_a_second_run_does_nothing():
    results = REPO / "results" / "demo"
    done = _make_demo()
    assert "Results: results/demo/" in done.stdout
    assert {p.name for p in results.iterdir()} == {*USER_ENTRIES, BOOKKEEPING} - {"speaker_embeddings.npy"}
    summary = json.loads((results / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (7, 1)  # seven clips (one silent); a text file named .mp3 fails
    written = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    _make_demo()
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()} == written
