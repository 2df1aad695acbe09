"""The package outside the checkout: a wheel built from the project, installed into a fresh virtual environment
beside the same dependencies, runs ``audiofeat.extract`` and ``audiofeat status`` from another folder (the
schemas travel as package data)."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from audiofeat.testing.media import make_audio

from conftest import REPO, run_snakemake, write_config

EXTRACT = """
import json, sys
import audiofeat
result = audiofeat.extract(sys.argv[1:], extractors=["features", "clap", "loudness"], cache={"dir": "cache"},
                           clap={"checkpoint": "", "allow_random_weights": True})
print(json.dumps({"package": audiofeat.__file__, "status": [m.status for m in result.manifests],
                  "errors": [m.error for m in result.manifests], "embeddings": list(result.embeddings.shape),
                  "blocks": sorted(result.manifests[0].blocks)}))
"""


def _wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of its package and metadata (no build output in the checkout)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "audiofeat", source / "audiofeat", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    return next((tmp_path / "dist").glob("audiofeat-*.whl"))


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel, its dependencies taken from this one's site-packages (a
    plain path: the editable install's hook there is not run, so only the wheel provides ``audiofeat``)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    return venv


def test_a_wheel_installed_elsewhere_extracts_and_reports_status(tmp_path):
    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "audiofeat/config/config.schema.yaml" in names and "audiofeat/outputs/manifest_base.schema.json" in names
    venv = _fresh_venv(tmp_path, wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    clip = make_audio(outside / "tone.flac", seconds=1.5, sr=22050, source="chirp")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env['PATH']}")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", EXTRACT, str(clip)], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert Path(result["package"]).is_relative_to(venv), result["package"]  # the wheel's copy, not the checkout
    assert result["status"] == ["ok"], result["errors"]
    assert result["embeddings"] == [1, 512] and result["blocks"] == ["clap", "features", "loudness"]

    work = tmp_path / "run"
    work.mkdir()
    shutil.copy(clip, outside / "copy.flac")
    run_snakemake(work, write_config(work / "c.yaml", input_dir=str(outside), results_dir="results",
                                     extractors=["loudness"], cache={"dir": str(work / "cache")}))
    status = subprocess.run([str(venv / "bin" / "audiofeat"), "status", str(work / "results")], cwd=outside, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "1 shards" and any(line.split()[0] == "loudness" and "1 done" in line for line in lines[1:])
