"""Every GPU of a node: the run lists the GPUs once, each local CLAP job claims one for itself and sees only it;
checked on the CPU through the listing seam (``perf.gpus``) with real concurrent jobs."""
import json
import re
import subprocess
import sys
import threading
from datetime import datetime

from audiofeat.extractors.devices import claim_gpu, visible_gpus
from audiofeat.testing.media import write_tone_clips

from conftest import run_snakemake, write_config


def test_the_gpu_list_comes_from_the_setting_the_visible_devices_or_nvidia_smi():
    listed = lambda: ["0", "1", "2", "3"]  # noqa: E731 - what nvidia-smi -L would say on a 4-GPU node
    assert visible_gpus("auto", environ={}, lister=listed) == ["0", "1", "2", "3"]
    assert visible_gpus("auto", environ={"CUDA_VISIBLE_DEVICES": "2,3"}, lister=listed) == ["2", "3"]
    assert visible_gpus("auto", environ={"CUDA_VISIBLE_DEVICES": ""}, lister=listed) == []
    assert visible_gpus("none", environ={}, lister=listed) == []
    assert visible_gpus("1,3", environ={}, lister=listed) == ["1", "3"]
    assert visible_gpus(2, environ={}, lister=listed) == ["0", "1"]


HOLD = """
import sys, time
from audiofeat.extractors.devices import claim_gpu
claim = claim_gpu(sys.argv[1].split(","), sys.argv[2])
print(claim.gpu, flush=True)
time.sleep(60)
"""


def test_a_held_gpu_is_skipped_without_waiting_and_freed_when_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "0", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        mine = claim_gpu(["0", "1"], str(tmp_path))
        assert (mine.gpu, mine.shared) == ("1", False)
        # Every GPU held: the claim returns at once, sharing the first, rather than waiting.
        result = []
        thread = threading.Thread(target=lambda: result.append(claim_gpu(["0", "1"], str(tmp_path))))
        thread.start()
        thread.join(timeout=20)
        assert result and (result[0].gpu, result[0].shared) == ("0", True)
        mine.release()
    finally:
        holder.kill()
        holder.wait()
    assert not claim_gpu(["0"], str(tmp_path)).shared  # the dead holder's lock went with it


def _job_span(log):
    stamps = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f") for m in
              re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", log.read_text(), re.M)]
    return min(stamps), max(stamps)


def test_two_concurrent_clap_jobs_get_different_gpus(tmp_path):
    """Two shards, two cores: both CLAP jobs run at once, each on its own GPU of ``perf.gpus`` (here a listing,
    on the CPU), each with a process preparing its windows."""
    write_tone_clips(tmp_path / "media", 12, seed=5, seconds=3.0)
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path / "media"), results_dir="out",
                          cache={"dir": str(tmp_path / "cache")}, extractors=["clap"], shard={"target_files": 6},
                          perf={"threads": 1, "gpus": "0,1", "loader_processes": 1})
    run_snakemake(tmp_path, config)
    profiles = [json.loads(p.read_text()) for p in (tmp_path / "out" / "bookkeeping" / "timings" / "clap").glob("*.json")]
    assert len(profiles) == 2 and all(p["loader_processes"] == 1 for p in profiles)
    assert sum(p["windows"] for p in profiles) == 12
    assert sorted(p["visible_devices"] for p in profiles) == ["0", "1"]
    logs = sorted((tmp_path / "out" / "bookkeeping" / "logs" / "extract_clap").glob("*.log"))
    assert not any("shared" in log.read_text() for log in logs)
    (first_start, first_end), (second_start, second_end) = map(_job_span, logs)
    assert first_start < second_end and second_start < first_end  # they ran side by side
