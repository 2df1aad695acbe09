"""Long recordings: every job's peak memory follows the work in flight, not the file's duration. Real Snakemake
runs of a 20-minute recording and a 2.5-minute one (enough CLAP windows to fill every batch in flight), each job's
peak RSS (its own ``getrusage``; the CLAP job's window workers, run here on the CPU as they run beside a GPU, from
their ``VmHWM``) compared."""
import json

import pytest

from audiofeat.testing.media import run_ffmpeg

from conftest import run_snakemake, write_config

LONG_S, SHORT_S = 20 * 60, 150


def _noise(path, seconds):
    """Stereo pink noise at 44.1 kHz in Vorbis: decoded, downmixed and resampled like a film's soundtrack."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg("-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=44100:duration={seconds}:amplitude=0.3",
               "-ac", "2", "-c:a", "libvorbis", "-q:a", "2", str(path))
    return path


def _peaks(work, name, seconds):
    media = _noise(work / name / "media" / f"{name}.ogg", seconds)
    config = write_config(work / f"{name}.yaml", input_dir=str(media.parent), results_dir=f"results-{name}",
                          cache={"dir": str(work / "cache")}, segment={"hop_seconds": 10},
                          extractors=["features", "clap", "loudness", "speech"],
                          perf={"loader_processes": 2})  # the CUDA path's window workers
    run_snakemake(work, config)
    peaks = {}
    for stage in ("decode", "features", "clap", "loudness", "speech"):
        profile, = (work / f"results-{name}" / "bookkeeping" / "timings" / stage).glob("*.json")
        peaks[stage] = json.loads(profile.read_text())["peak_rss_mb"]
        if stage == "clap":
            peaks["clap workers"] = json.loads(profile.read_text())["peak_worker_rss_mb"]
    return peaks


@pytest.mark.parametrize("stage, allowance_mb", [("decode", 30), ("features", 100), ("clap", 120),
                                                 ("clap workers", 30), ("loudness", 100), ("speech", 30)])
def test_a_20_minute_recording_costs_each_job_about_what_a_short_one_does(long_and_short, stage, allowance_mb):
    """The whole waveform is 230 MB at 48 kHz (more while decoding); CLAP's 120 windows 230 MB: a job that held
    either fails. Allowed: features' one chunk of per-frame values (57 MB of log-mel here; bounded at 46 minutes),
    and CLAP's allocator, whose peak creeps up over many forward passes (about 80 MB from 15 to 120 windows).
    The loudness meter keeps one energy per 100 ms, but its job's peak varies from run to run of the same file
    (243 to 277 MB at 20 minutes, its file-backed pages the same), while holding the file's stereo at 44.1 kHz
    would take 423 MB. Speech keeps one probability per 32 ms (its model's state chained every window with
    autograd on: 10 GB into a 10-hour file)."""
    long, short = long_and_short
    assert long[stage] < short[stage] + allowance_mb, (stage, long, short)
    assert short["clap workers"] > 20  # the workers ran (an interpreter with numpy), and were counted


@pytest.fixture(scope="module")
def long_and_short(tmp_path_factory):
    work = tmp_path_factory.mktemp("long")
    return _peaks(work, "long", LONG_S), _peaks(work, "short", SHORT_S)
