"""The benchmark scenario script on tiny sets: it runs every scenario and derives recommendations."""
import json
import subprocess
import sys

from conftest import REPO


def test_run_local_processing_quick(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_local_processing.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run_local_processing.json").read_text())
    names = [s["scenario"] for s in summary["scenarios"]]
    for expected in ("short: cold", "short: cached (new results folder, filled store)", "short: rerun, nothing to do",
                     "short: one window per forward pass", "short: micro-batched (160 s)", "short: PERF_THREADS=1",
                     "short: one window per clip (segment.enabled: false)",
                     "long: segmentation on", "long: segmentation off (centre window)"):
        assert expected in names
    cold = summary["scenarios"][names.index("short: cold")]
    cached = summary["scenarios"][names.index("short: cached (new results folder, filled store)")]
    assert cold["cache_misses"] > 0 and cached["cache_misses"] == 0 and cached["cache_hits"] > 0
    assert 0 < cold["model_busy"] <= 1.0
    assert summary["end_to_end_speedup_vs_loop"] > 0 and summary["cached_share_of_cold"] < 1
    one_window = summary["scenarios"][names.index("short: one window per clip (segment.enabled: false)")]
    assert one_window["windows"] == summary["sets"]["short_files"]  # one window per clip, as the loop
    assert 0 < one_window["windows"] <= cold["windows"] and summary["same_work_speedup_vs_loop"] > 0
    assert cached["windows"] == 0  # every embedding from the store
    assert 0.99 < summary["segmentation_min_cosine"] <= 1.0  # sliding windows and the centre one agree
    assert len(summary["recommendations"]) >= 4 and summary["recommendations"][0].startswith("perf.threads")
    markdown = (tmp_path / "run_local_processing.md").read_text()
    assert "| scenario |" in markdown and "## Recommendations" in markdown
