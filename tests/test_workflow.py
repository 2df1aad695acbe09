"""End to end: real Snakemake over ffmpeg-made media, every manifest checked against the schema and the facts."""
import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from audiofeat.extractors import EXTRACTORS, section_schemas
from audiofeat.outputs.manifest import AudioManifest, validate_manifest
from audiofeat.testing.media import make_audio, make_video

from conftest import assert_dataset_is_the_manifests, read_manifests, REPO, run_snakemake, write_config

# name -> (builder, expected status, duration s, source sample rate, channels)
GOOD = {
    "audio/tone 8k mono.wav": (lambda p: make_audio(p, seconds=1.0, sr=8000), 1.0, 8000, 1),
    "audio/noise_96k_stereo.flac": (lambda p: make_audio(p, seconds=1.5, sr=96000, channels=2, source="noise"),
                                    1.5, 96000, 2),
    "audio/chirp_44k.mp3": (lambda p: make_audio(p, seconds=2.0, sr=44100, source="chirp"), 2.0, 44100, 1),
    "audio/ünïcødé 'quoted' $(touch pwned).ogg": (
        lambda p: make_audio(p, seconds=1.0, sr=22050, codec_args=("-c:a", "libvorbis")), 1.0, 22050, 1),
    "audio/silence.wav": (lambda p: make_audio(p, seconds=1.0, sr=16000, source="silence"), 1.0, 16000, 1),
    "audio/blip_20ms.wav": (lambda p: make_audio(p, seconds=0.02, sr=48000), 0.02, 48000, 1),
    "long/three_minutes.m4a": (lambda p: make_audio(p, seconds=180, sr=24000, source="chirp"), 180.0, 24000, 1),
    "video/clip.mp4": (lambda p: make_video(p, seconds=2.0, sr=44100, channels=2), 2.0, 44100, 2),
    "video/clip.webm": (lambda p: make_video(p, seconds=1.0, sr=48000, channels=1,
                                             codec_args=("-c:a", "libopus")), 1.0, 48000, 1),
}
BAD = {
    "bad/empty.wav": "empty file",
    "bad/not_media.mp3": "not a media file",
    "bad/no_audio.mp4": "no audio stream",
    "bad/truncated.flac": "truncated",
}

DEFAULT_BLOCKS = {name: EXTRACTORS[name].block_schema for name in ("features", "clap")}
# Not the defaults: a value the features extractor ignored (and recorded as used) would show in the statistics.
FEATURES = {"n_mfcc": 13, "n_mels": 64, "hop_length": 480, "fmin": 40.0}


def _make_bad(root):
    (root / "bad").mkdir(parents=True)
    (root / "bad/empty.wav").write_bytes(b"")
    (root / "bad/not_media.mp3").write_text("plain text\n" * 50)
    make_video(root / "bad/no_audio.mp4", seconds=1.0, with_audio=False)
    full = make_audio(root / "bad/full.flac", seconds=8.0, sr=44100, source="noise").read_bytes()
    (root / "bad/full.flac").unlink()
    (root / "bad/truncated.flac").write_bytes(full[: len(full) // 3])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    media = work / "media"
    for name, (build, *_rest) in GOOD.items():
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        build(media / name)
    _make_bad(media)
    config = write_config(work / "config.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(work / "cache")}, features=FEATURES)
    done = run_snakemake(work, config)
    return work, media, config, done


def test_every_manifest_passes_the_schema_and_the_facts(finished_run):
    work, media, _, done = finished_run
    results = work / "results"
    lines = read_manifests(results)
    assert len(lines) == len(GOOD) + len(BAD)
    assert_dataset_is_the_manifests(results)
    by_path = {line["source"]["path"]: line for line in lines}
    for name, (_build, duration, sr, channels) in GOOD.items():
        record = by_path[str(media / name)]
        validate_manifest(record, DEFAULT_BLOCKS)
        assert record["status"] == "ok", (name, record.get("error"))
        audio = record["audio"]
        assert audio["duration_s"] == pytest.approx(duration, abs=0.03), name
        assert (audio["sample_rate"], audio["channels"], audio["target_sr"]) == (sr, channels, 48000), name
        embedding = np.asarray(record["clap"]["embedding"])
        assert embedding.shape == (512,) and abs(np.linalg.norm(embedding) - 1) < 1e-4
        assert record["clap"]["weights"] == "random(seed=0)"
        assert len(record["features"]["mfcc"]["mean"]) == 13 and len(record["features"]["mel"]["p90"]) == 64
        assert set(record["extractors"]) == {"decode", "features", "clap"}
        per_file = results / "manifests" / (name + ".json")
        assert json.loads(per_file.read_text(encoding="utf-8")) == record
        assert AudioManifest.from_dict(record).to_dict() == record
    _recomputed_from_the_wav(by_path[str(media / "audio/chirp_44k.mp3")], by_path[str(media / "video/clip.mp4")])
    long = by_path[str(media / "long/three_minutes.m4a")]
    assert len(long["clap"]["segments"]) == 35  # 0-10, 5-15, ..., 170-180
    assert long["clap"]["segments"][-1]["end_s"] == pytest.approx(180.0, abs=0.01)
    for name, cause in BAD.items():
        record = by_path[str(media / name)]
        validate_manifest(record, DEFAULT_BLOCKS)
        assert record["status"] == "error" and cause in record["error"], (name, record.get("error"))
        assert "\n" not in record["error"]
    assert not (work / "pwned").exists() and not (REPO / "pwned").exists()


def _recomputed_from_the_wav(*records):
    """Each file's features and embedding, computed here from its WAV with the library and the model under the
    run's config (not the manifest's own record of it), equal its manifest's (a config value ignored, wrong
    parameters, or blocks swapped between files, would not)."""
    import torch

    from audiofeat import dsp
    from audiofeat.clap.model import get_model
    from audiofeat.clap.windows import aggregate, model_inputs, plan_windows
    from audiofeat.config.schema import validate_config
    from audiofeat.inputs.wav import read_wav

    config = validate_config({"input_dir": "x", "features": FEATURES}, sections=section_schemas())
    model = get_model("HTSAT-tiny", None, "random(seed=0)", device="cpu", warm_up=False)
    for record in records:
        y, sr = read_wav(record["audio"]["wav"])
        assert sr == config["audio"]["target_sr"]
        summary = dsp.feature_summary(y, sr=sr, **config["features"])
        for part in ("mfcc", "mel"):
            for name, values in summary[part].items():
                assert np.allclose(record["features"][part][name], values, rtol=1e-5, atol=1e-5), (part, name)
        segment = config["segment"]
        windows = plan_windows(len(y), round(segment["window_seconds"] * sr), round(segment["hop_seconds"] * sr))
        with torch.no_grad():
            per_window = model.model(torch.from_numpy(model_inputs(y, windows, 480000))).numpy()
        embedding, _ = aggregate(per_window, "mean")
        assert np.abs(np.asarray(record["clap"]["embedding"]) - embedding).max() <= 1e-5


def test_dataset_outputs_and_summary(finished_run):
    work, media, _, done = finished_run
    lines = read_manifests(work / "results")
    matrix = np.load(work / "results" / "embeddings.npy")
    assert matrix.shape == (len(lines), 512)
    for row, line in zip(matrix, lines):
        if line["status"] == "ok":
            assert np.allclose(row, line["clap"]["embedding"])
        else:
            assert not row.any()
    summary = json.loads((work / "results" / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (len(GOOD), len(BAD))
    assert f"{len(GOOD)} ok, {len(BAD)} failed; manifests in results/manifests; failures by cause in " \
           "results/report/index.html" in done.stdout + done.stderr
    listed = {f["path"]: f["manifest"] for group in summary["failures"] for f in group["files"]}
    assert set(listed) == {str(media / name) for name in BAD}
    assert all((work / "results" / link).is_file() for link in listed.values())  # each links its manifest
    # plots: time per stage, per-file cost, durations (the run's other extractors have no main number to draw)
    assert (work / "results" / "report" / "index.html").read_text(encoding="utf-8").count("<svg") == 3
    timings = (work / "results" / "report" / "timings.tsv").read_text().splitlines()
    assert timings[0].startswith("stage") and len(timings) == 4
    # One column per timed step: decoding and resampling apart, features, CLAP's preparation and forward, writes.
    columns = timings[0].split("\t")
    assert {"decode_s", "resample_s", "features_s", "clap_preprocess_s", "clap_forward_s", "write_s",
            "clap_input_wait_s"} <= set(columns)
    clap_row = dict(zip(columns, next(line for line in timings if line.startswith("clap")).split("\t")))
    assert 0 <= float(clap_row["clap_input_wait_s"]) < float(clap_row["clap_loop_s"])  # a part of the loop
    for rule in ("inventory", "decode", "extract_features", "extract_clap", "finalize"):
        assert list((work / "results" / "bookkeeping" / "benchmarks").rglob(f"{rule}*")) or \
            list((work / "results" / "bookkeeping" / "benchmarks" / rule).glob("*.tsv")), rule


def test_strict_mode_fails_after_finishing_everything(finished_run):
    """A fresh results folder (the store is the finished run's, so its jobs are quick): every job runs and every
    output is written by this run, then strict fails it."""
    work, media, config, _ = finished_run
    strict = write_config(work / "strict.yaml", input_dir=str(media), results_dir="strict-results",
                          cache={"dir": str(work / "cache")}, strict=True, features=FEATURES)
    started = time.time()
    done = run_snakemake(work, strict, check=False)
    assert done.returncode != 0
    assert "strict: 4 inputs failed" in done.stderr
    out = work / "strict-results"
    for written in ("dataset", "embeddings.npy", "summary.json", "report/index.html"):
        assert (out / written).stat().st_mtime >= started, written
    statuses = [line["status"] for line in read_manifests(out)]
    assert (statuses.count("ok"), statuses.count("error")) == (len(GOOD), len(BAD))
    assert not (out / "bookkeeping" / "status" / "strict_ok").exists()


def test_input_list_and_identical_contents(tmp_path):
    media = tmp_path / "m"
    first = make_audio(media / "a.wav", seconds=0.5, sr=16000)
    shutil.copy(first, media / "copy of a.wav")
    other = make_audio(tmp_path / "elsewhere" / "b.flac", seconds=0.5, sr=16000, source="noise")
    listing = media / "list.txt"
    listing.write_text(f"a.wav\n# a comment\n\ncopy of a.wav\n{other}\n")
    config = write_config(tmp_path / "c.yaml", input_dir="", input_list=str(listing), results_dir="out",
                          cache={"dir": str(tmp_path / "cache")})
    run_snakemake(tmp_path, config)
    lines = read_manifests(tmp_path / "out")
    assert [line["status"] for line in lines] == ["ok"] * 3
    key = next(line["source"]["content_key"] for line in lines if line["source"]["path"] == str(first))
    same = [line for line in lines if line["source"]["content_key"] == key]
    assert len(same) == 2 and same[0]["clap"] == same[1]["clap"]
    # Identical contents processed once: every stage's jobs looked up and computed two contents, not three paths.
    for stage in ("decode", "features", "clap"):
        profiles = [json.loads(p.read_text()) for p in (tmp_path / "out" / "bookkeeping" / "timings" / stage).glob("*.json")]
        assert (sum(p["cache_misses"] for p in profiles), sum(p["cache_hits"] for p in profiles)) == (2, 0), stage


def test_config_errors_stop_the_run_naming_the_key(tmp_path):
    config = write_config(tmp_path / "bad.yaml", input_dir=str(tmp_path), segment={"aggregate_mode": "median"})
    done = run_snakemake(tmp_path, config, check=False)
    assert done.returncode != 0
    assert "segment.aggregate_mode" in done.stderr and "mean, weighted, robust" in done.stderr


def test_lint_and_slurm_dry_run_resolve_resources(finished_run):
    work, media, config, _ = finished_run
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", str(config),
                           "--directory", str(work), "--snakefile", str(REPO / "Snakefile")],
                          capture_output=True, text=True, cwd=work)
    assert lint.returncode == 0 and "in a good condition" in lint.stdout + lint.stderr
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", str(REPO / "profiles/slurm"),
                          "--forcerun", "extract_clap", "--configfile", str(config), "--directory", str(work),
                          "--snakefile", str(REPO / "Snakefile")], capture_output=True, text=True, cwd=work)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-3000:]
    clap_jobs = out.split("rule extract_clap:")[1:]
    assert clap_jobs and all("gpu=1" in job.split("rule ")[0] for job in clap_jobs)


def test_slurm_profile_runs_the_workflow_on_a_real_cluster(finished_run):
    """profiles/slurm, unchanged, against a one-node SLURM cluster on this machine (.ci/local_slurm.sh): every
    shard job goes through sbatch, CLAP's with a GPU, and the results equal the local run's."""
    work, media, _, _ = finished_run
    assert shutil.which("slurmctld") and shutil.which("sacct"), "SLURM missing: run `make test-deps`"
    script = str(REPO / ".ci" / "local_slurm.sh")
    was_running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", script, "start"], timeout=240, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        _run_on_local_slurm(work, media)
    finally:
        if not was_running:  # leave the machine as the test found it
            subprocess.run(["bash", script, "stop"], timeout=60)


def _run_on_local_slurm(work, media):
    cluster = work / "on-slurm"
    cluster.mkdir()
    config = write_config(cluster / "config.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(cluster / "cache")}, features=FEATURES)  # its own store: the jobs compute, not read back
    done = run_snakemake(cluster, config, "--slurm-init-seconds-before-status-checks", "2", profile="slurm",
                         timeout=900)

    local, on_slurm = work / "results", cluster / "results"
    assert read_manifests(on_slurm) and \
        [(r["source"]["path"], r["status"]) for r in read_manifests(on_slurm)] == \
        [(r["source"]["path"], r["status"]) for r in read_manifests(local)]
    assert np.abs(np.load(on_slurm / "embeddings.npy") - np.load(local / "embeddings.npy")).max() <= 1e-5
    features = {r["source"]["path"]: r.get("features") for r in read_manifests(local)}
    for record in read_manifests(on_slurm):  # the statistics too, not only the embeddings
        expected = features[record["source"]["path"]]
        assert (expected is None and "features" not in record) or _close(record["features"], expected)
    # Which SLURM job ran what, from the plugin's lines: "... submitted with SLURM jobid N (log: .../group_G/...":
    # per shard, one submission for its CPU jobs and one for CLAP with the assembly, nothing per rule.
    job_ids = {}
    for job_id, kind, name in re.findall(r"SLURM jobid (\d+) \(log: \S*/(rule|group)_(\w+)/", done.stdout + done.stderr):
        group = next((g for g in ("shard_cpu", "shard_gpu") if kind == "group" and name.startswith(g)), name)
        job_ids.setdefault(f"{kind}_{group}", []).append(job_id)  # a group job's name is its group's and rules
    shards = len(list((local / "bookkeeping" / "inventory" / "shards").glob("*.tsv")))
    assert {k: len(v) for k, v in job_ids.items()} == {"group_shard_cpu": shards, "group_shard_gpu": shards}
    requested = {rule: subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "--format=ReqTRES"],
                                      capture_output=True, text=True, check=True, timeout=30).stdout.split()
                 for rule, ids in job_ids.items()}
    assert requested["group_shard_gpu"] and all("gres/gpu=1" in t and "cpu=8" in t and "mem=16000M" in t
                                                for t in requested["group_shard_gpu"])
    assert all("cpu=8" in t and "gres/gpu" not in t for t in requested["group_shard_cpu"])  # features' 8 threads


def _close(a, b):
    """Nested manifest blocks equal within float32 noise (two machines' thread counts differ)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-5, atol=1e-5)
    return a == b


def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    import csv
    import html.parser
    import xml.etree.ElementTree as ET

    import av

    work, *_ = finished_run
    page = work / "results" / "report" / "index.html"
    text = page.read_text(encoding="utf-8")

    class Collect(html.parser.HTMLParser):
        headings, cells = [], []

        def handle_data(self, data):
            if self.lasttag in ("h1", "h2"):
                self.headings.append(data.strip())
            elif self.lasttag == "td":
                self.cells.append(data.strip())

    parsed = Collect()
    parsed.feed(text)
    assert {"Advice", "Stages", "Time per stage", "Per-file cost", "Slowest files", "Failures by cause",
            "Distributions", "Flagged files", "Settings"} <= set(parsed.headings)
    assert "decode" in parsed.cells and "clap" in parsed.cells
    assert "Model-busy fraction" in text and "not a media file" in text
    assert "Seeded random weights (random(seed=0)): embeddings carry no meaning" in text.split("<h2")[0]
    # The model-busy fraction shown is the CLAP jobs' forward seconds over their workers' wall seconds.
    clap = [json.loads(p.read_text()) for p in (work / "results" / "bookkeeping" / "timings" / "clap").glob("*.json")]
    busy = sum(p["seconds"]["clap_forward"] for p in clap) / sum(p["wall_s"] * p.get("workers", 1) for p in clap)
    assert f"Model-busy fraction (CLAP forward ÷ CLAP job wall time): <b>{busy:.2f}</b>" in text and 0 < busy < 1
    assert not re.search(r"(?:src|href)=['\"](?:https?:)?//", text)  # self-contained: nothing fetched
    slowest = text.split("<h2>Slowest files</h2>")[1].split("<h2")[0]
    assert slowest.count("<tr>") == 1 + 10  # the header and the ten slowest of 13 files
    # The plots are inline SVG whose bars carry their numbers: the stage bars are timings.tsv's wall seconds, the
    # cost histogram counts every processed file once, the durations every decoded one.
    stages_svg, files_svg, durations_svg = (ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", text, re.S))
    ns = "{http://www.w3.org/2000/svg}"

    def bars(svg):
        return [(float(r.get("width")), float(r.get("height")), r.find(f"{ns}title").text)
                for r in svg.iter(f"{ns}rect") if r.get("class") == "bar"]

    with open(work / "results" / "report" / "timings.tsv", newline="") as handle:
        wall = {row["stage"]: float(row["wall_s"]) for row in csv.DictReader(handle, delimiter="\t")}
    stage_bars = {title.split(":")[0]: (width, float(title.split(": ")[1])) for width, _, title in bars(stages_svg)}
    assert set(stage_bars) == set(wall) == {"decode", "features", "clap"}
    assert all(abs(stage_bars[s][1] - wall[s]) < 1e-3 and stage_bars[s][0] > 0 for s in wall)
    longest = max(wall, key=wall.get)
    assert stage_bars[longest][0] == max(width for width, _ in stage_bars.values())
    counts = [int(title.rsplit(": ", 1)[1].split()[0]) for _, _, title in bars(files_svg)]
    manifests = read_manifests(work / "results")
    assert sum(counts) == len(manifests) and max(counts) > 0
    durations = [int(title.rsplit(": ", 1)[1].split()[0]) for _, _, title in bars(durations_svg)]
    assert sum(durations) == sum(m["status"] == "ok" for m in manifests)
    assert "no extractor that flags files ran" in text  # features and clap flag nothing

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium missing: run `make test-deps`"
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    with av.open(str(shot)) as container:
        pixels = next(container.decode(video=0)).to_ndarray(format="rgb24")
    not_white = (pixels < 230).any(axis=-1).mean()
    assert 0.02 < not_white < 0.9, not_white  # text, tables and plots, not a blank page

    # Wide tables scroll inside their box: the page itself is no wider than a narrow window. Chromium lays the
    # page out and a probe script (added to a copy beside it) reports the document's scroll width.
    probe = page.with_name("layout-probe.html")
    probe.write_text(text.replace("</body>", "<script>document.body.setAttribute('data-width', "
                                  "document.documentElement.scrollWidth)</script></body>"), encoding="utf-8")
    try:
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=700,900", "--dump-dom",
                              probe.as_uri()], check=True, capture_output=True, text=True, timeout=120).stdout
    finally:
        probe.unlink()
    width = int(re.search(r'data-width="(\d+)"', dom).group(1))
    assert width <= 700, width
    assert "<a href='../manifests/bad/empty.wav.json'>" in text  # failures link their manifests


def test_manifest_record_round_trip_and_nan_refusal():
    from audiofeat.outputs.manifest import AudioInfo, Source

    stats = {"mean": [1.0], "std": [0.0], "min": [1.0], "max": [1.0], "median": [1.0]}
    clap = {"model": "HTSAT-tiny", "weights": "random(seed=0)", "embedding": [1.0],
            "segments": [{"start_s": 0.0, "end_s": 1.0}], "aggregate_strategy": {"mode": "mean"}, "precision": "fp32"}
    manifest = AudioManifest(
        source=Source("/a.wav", "ab" * 16, 10), status="ok", audiofeat_version="0",
        audio=AudioInfo(1.0, 16000, 1, "pcm_s16le", "wav", 48000, "/store/x.wav"),
        blocks={"features": {"params": {"n_mfcc": 1}, "mfcc": stats, "mel": stats, "n_frames": 3}, "clap": clap},
        extractors={"decode": {"version": "1", "params_hash": "x"}}, timings={"decode": 0.1})
    data = manifest.to_dict()
    validate_manifest(data, DEFAULT_BLOCKS)
    assert AudioManifest.from_dict(json.loads(manifest.to_json())) == manifest
    with pytest.raises(Exception):  # a run of features alone has no clap block in its schema
        validate_manifest(data, {"features": EXTRACTORS["features"].block_schema})
    validate_manifest({k: v for k, v in data.items() if k != "clap"}, {"features": EXTRACTORS["features"].block_schema})
    broken = AudioManifest(source=manifest.source, status="ok", audiofeat_version="0", audio=manifest.audio,
                           blocks={**manifest.blocks, "clap": {**clap, "embedding": [float("nan")]}})
    with pytest.raises(ValueError):
        broken.to_json()


def test_snakemake_report_includes_the_run_report(finished_run, tmp_path):
    import zipfile

    work, _media, config, _ = finished_run
    target = tmp_path / "report.zip"
    done = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(config), "--directory", str(work),
                           "--snakefile", str(REPO / "Snakefile"), "--report", str(target)],
                          capture_output=True, text=True, cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with zipfile.ZipFile(target) as archive:
        pages = [name for name in archive.namelist() if name.endswith("/index.html")]
        assert pages and "audiofeat run report" in archive.read(pages[0]).decode()


def test_the_python_api_reuses_what_the_workflow_computed(finished_run):
    import audiofeat
    from conftest import created_since

    work, media, _, _ = finished_run
    lines = read_manifests(work / "results")
    lines.append(lines[0])  # a path twice: the same content, computed once, reported twice
    paths = [line["source"]["path"] for line in lines]
    started = time.time()
    result = audiofeat.extract(paths, cache={"dir": str(work / "cache")}, features=FEATURES,
                               clap={"checkpoint": "", "allow_random_weights": True})
    assert created_since(work / "cache", started) == {}  # the same keys: nothing recomputed
    assert [m.status for m in result.manifests] == [line["status"] for line in lines]
    for manifest, line in zip(result.manifests, lines):
        data = manifest.to_dict()
        assert data.get("error") == line.get("error")
        if line["status"] == "ok":
            assert data["features"] == line["features"] and data["clap"] == line["clap"]
    expected = np.load(work / "results" / "embeddings.npy")
    assert np.array_equal(result.embeddings, np.concatenate([expected, expected[:1]]))
