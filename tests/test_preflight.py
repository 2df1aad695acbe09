"""Preflight: configuration problems stop the run before any work, one line each naming the key and the fix."""
import subprocess
import zipfile

import pytest

from audiofeat.preflight import (checkpoint_problem, device_problem, disk_warning, folder_problem, input_problem,
                                 preflight)
from audiofeat.testing.media import write_seeded_checkpoint

from conftest import run_snakemake, write_config

# A proxy on a port nothing listens on: a real connection failure, the same with or without a network.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}


def _check(checkpoint, tmp_path, allow=False):
    return checkpoint_problem(checkpoint, allow_random_weights=allow, model_name="HTSAT-tiny",
                              cache_dir=str(tmp_path / "cache"))


def test_checkpoint_problems_name_the_key_and_the_fix(tmp_path):
    assert _check("", tmp_path, allow=True) is None
    assert "clap.allow_random_weights is false" in _check("", tmp_path)
    assert f"clap.checkpoint '{tmp_path}/nope.pt' does not exist" in _check(str(tmp_path / "nope.pt"), tmp_path)
    assert "cannot be read" in _check(str(tmp_path), tmp_path)  # a folder
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as archive:  # a torch-style zip whose pickle names no audio tower
        archive.writestr("other/data.pkl", b"\x80\x02}q\x00X\x06\x00\x00\x00weightsq\x01s.")
    assert "is not a LAION CLAP checkpoint" in _check(str(other), tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    assert "is not a LAION CLAP checkpoint" in _check(str(tmp_path / "notes.txt"), tmp_path)
    laion = write_seeded_checkpoint(tmp_path / "laion.pt")
    assert _check(str(laion), tmp_path) is None


def test_auto_without_network_says_what_auto_means(tmp_path, monkeypatch):
    for name, value in NO_NETWORK.items():
        monkeypatch.setenv(name, value)
    for allow in (False, True):  # random weights never stand in for 'auto'
        line = _check("auto", tmp_path, allow=allow)
        assert line.startswith("clap.checkpoint: auto needs LAION's 630k-audioset-best.pt, which is not in ")
        assert "set clap.checkpoint to its path" in line and "clap.checkpoint: ''" in line and "\n" not in line
    cached = tmp_path / "cache" / "checkpoints"
    cached.mkdir(parents=True)
    (cached / "630k-audioset-best.pt").write_bytes(b"x")
    (cached / "630k-audioset-best.pt.sha256").write_text("0" * 64)
    assert _check("auto", tmp_path) is None  # already downloaded: no network needed


def test_auto_with_its_server_reachable_passes_after_asking_it(tmp_path, monkeypatch):
    import http.server
    import threading

    from audiofeat.clap import checkpoint

    asked = []

    class Head(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - the handler's name is the method's
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        url = f"http://127.0.0.1:{server.server_port}/630k-audioset-best.pt"
        monkeypatch.setitem(checkpoint.PUBLISHED_CHECKPOINTS, "HTSAT-tiny", (url, "630k-audioset-best.pt"))
        assert _check("auto", tmp_path) is None and asked == ["/630k-audioset-best.pt"]
        server.shutdown()  # the same URL unanswered: the problem line
        server.server_close()
        assert "cannot be reached" in _check("auto", tmp_path)
    finally:
        server.server_close()


def test_folders_devices_and_disk(tmp_path):
    (tmp_path / "file").write_text("")
    assert folder_problem("cache.dir", str(tmp_path / "file" / "store")).startswith(
        f"cache.dir {tmp_path}/file/store cannot be written (Not a directory)")
    assert folder_problem("results_dir", str(tmp_path / "new" / "results")) is None
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,ro", "tmpfs", str(small)], check=True)
    try:
        assert "cannot be written (Read-only file system)" in folder_problem("cache.dir", str(small))
        assert disk_warning(str(small)).startswith(f"{small} has 8 MiB free")
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert device_problem("cpu") is None and device_problem("auto") is None
    assert device_problem("cuda:3") == "perf.device is 'cuda:3' but no NVIDIA GPU is visible here: " \
                                      "set perf.device: auto or cpu"


def test_preflight_names_every_problem_at_once(tmp_path):
    config = {"clap": {"checkpoint": str(tmp_path / "missing.pt"), "allow_random_weights": False,
                       "model": "HTSAT-tiny"},
              "cache": {"dir": str(tmp_path / "cache"), "enabled": True}, "results_dir": str(tmp_path / "results"),
              "perf": {"device": "cuda:1"}}
    with pytest.raises(ValueError) as info:
        preflight(_settings(config))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("clap.checkpoint") and lines[1].startswith("perf.device")
    fine = config | {"clap": {**config["clap"], "checkpoint": "", "allow_random_weights": True},
                     "perf": {"device": "cpu"}}
    import audiofeat.preflight

    with pytest.MonkeyPatch.context() as patch:  # the warning follows the threshold, whatever this disk holds
        patch.setattr(audiofeat.preflight, "LOW_DISK_BYTES", 0)
        assert preflight(_settings(fine)) == []
        patch.setattr(audiofeat.preflight, "LOW_DISK_BYTES", 1 << 60)
        warnings = preflight(_settings(fine))
        assert len(warnings) == 1 and warnings[0].startswith(f"{tmp_path / 'cache'} has ")
    with pytest.raises(ValueError, match="clap.allow_random_weights is false"):
        preflight(_settings(config | {"clap": {**config["clap"], "checkpoint": ""}, "perf": {"device": "cpu"}}))


def test_a_run_with_bad_settings_stops_before_any_job(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")},
                          clap={"checkpoint": "auto", "allow_random_weights": True}, perf={"device": "cuda:2"})
    done = run_snakemake(tmp_path, config, check=False, env=NO_NETWORK)
    assert done.returncode != 0
    assert "clap.checkpoint: auto needs LAION's 630k-audioset-best.pt" in done.stderr
    assert "perf.device is 'cuda:2' but no NVIDIA GPU is visible here" in done.stderr
    assert not (tmp_path / "results" / "bookkeeping" / "inventory").exists()  # no job ran


def test_a_mistyped_input_folder_or_list_stops_the_run_naming_the_key(tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text("")
    assert input_problem("input_dir", str(listing), folder=True) == \
        f"input_dir {listing} is not a folder: set input_dir to the folder of your inputs"
    assert input_problem("input_list", str(tmp_path), folder=False) == \
        f"input_list {tmp_path} is not a file: set input_list to the file of your inputs"
    assert input_problem("input_dir", str(tmp_path), folder=True) is None
    assert input_problem("input_list", str(listing), folder=False) is None
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")})
    done = run_snakemake(tmp_path, config, "--config", "input_dir=/nonexistent/media", check=False)
    assert done.returncode != 0
    assert "input_dir /nonexistent/media does not exist: set input_dir to the folder of your inputs" in done.stderr
    assert "FileNotFoundError" not in done.stderr and not (tmp_path / "results" / "bookkeeping" / "inventory").exists()


def test_the_inventory_counts_what_this_run_will_decode(tmp_path):
    """New contents (hashed by this run) count toward the store's growth; known ones and copies do not."""
    import shutil as sh

    from audiofeat.inputs.inventory import run_inventory
    from audiofeat.faults import free_bytes
    from audiofeat.preflight import OTHER_BYTES_PER_FILE, store_growth
    from audiofeat.testing.media import make_audio

    media = tmp_path / "media"
    make_audio(media / "a.wav", seconds=2.0, sr=16000)
    sh.copy(media / "a.wav", media / "copy of a.wav")

    def inventory():
        return run_inventory(str(media), "", str(tmp_path / "inv"), index_path=str(tmp_path / "index.sqlite"),
                             state_path=str(tmp_path / "state.json"), target_files=64, target_audio_seconds=7200)

    first = inventory()
    assert (first["new_files"], first["new_audio_s"]) == (1, pytest.approx(2.0, abs=0.01))
    make_audio(media / "b.wav", seconds=3.0, sr=16000)
    second = inventory()
    assert (second["new_files"], second["new_audio_s"]) == (1, pytest.approx(3.0, abs=0.01))
    assert store_growth(60.0, 2, target_sr=48000) == 60 * 48000 * 4 + 2 * OTHER_BYTES_PER_FILE
    assert free_bytes(str(tmp_path / "not" / "yet")) == free_bytes(str(tmp_path)) > 0


def _settings(config: dict):
    from audiofeat.config.schema import validate_config
    from audiofeat.config.settings import Settings

    from audiofeat.extractors import section_schemas

    return Settings.from_config(validate_config(config, require_inputs=False, sections=section_schemas()))


def test_runs_that_start_no_job_are_never_stopped_by_preflight(tmp_path):
    """--unlock (after a killed run), --list-rules, --cleanup-metadata and --dry-run start no job: a setting that
    would stop a run (here `auto` weights without network, and a mistyped input folder) does not stop them; the
    real run stops on them, before any job."""
    config = write_config(tmp_path / "c.yaml", input_dir=str(tmp_path / "no-such-media"), results_dir="results",
                          cache={"dir": str(tmp_path / "cache")}, clap={"checkpoint": "auto"})
    (tmp_path / "results").mkdir()
    for extra in (["--unlock"], ["--list-rules"], ["--cleanup-metadata", str(tmp_path / "results" / "x")],
                  ["--dry-run"]):
        done = run_snakemake(tmp_path, config, *extra, check=False, env=NO_NETWORK)
        assert "clap.checkpoint" not in done.stderr and "input_dir" not in done.stderr, extra
        # (cleaning the metadata of a file that has none is Snakemake's own error)
        assert done.returncode == 0 or "metadata" in extra[0], (extra, done.stderr[-2000:])
    done = run_snakemake(tmp_path, config, check=False, env=NO_NETWORK)
    assert done.returncode != 0 and "input_dir" in done.stderr and "clap.checkpoint: auto needs" in done.stderr
    assert not (tmp_path / "results" / "bookkeeping" / "inventory").exists()  # no job ran
