"""Inventory scanning: what the walk finds, and what it says about what it cannot read."""
import dataclasses
import logging
import os
from pathlib import Path

from audiofeat.inputs.inventory import iter_inputs
from audiofeat.testing.media import make_audio


def test_a_folder_that_cannot_be_listed_is_named_in_a_warning(tmp_path, caplog):
    clip = make_audio(tmp_path / "media" / "ok.wav", seconds=0.2)
    # A folder whose path is longer than the kernel's PATH_MAX cannot be listed (ENAMETOOLONG) even by root, who
    # could list a folder without read permission; the walk takes the same error path for both.
    fd = os.open(tmp_path / "media", os.O_RDONLY)
    for _ in range(18):  # 18 levels of 250-character names: more than 4,096 bytes
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    with caplog.at_level(logging.WARNING, logger="audiofeat.inputs.inventory"):
        found = list(iter_inputs(str(tmp_path / "media"), ""))
    assert found == [(str(clip), "ok.wav")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot list folder" in warnings[0] and "d" * 250 in warnings[0]
    assert "File name too long" in warnings[0]


def test_hard_links_are_hashed_once_and_each_name_is_remembered(tmp_path, monkeypatch):
    from audiofeat.inputs import inventory

    media = tmp_path / "media"
    clip = make_audio(media / "a.wav", seconds=0.2)
    for i in range(3):
        os.link(clip, media / f"link{i}.wav")
    other = make_audio(media / "b.wav", seconds=0.3, frequency=330)
    hashed = []
    real = inventory.blake2b_file
    monkeypatch.setattr(inventory, "blake2b_file", lambda path: hashed.append(path) or real(path))
    index = inventory.StatIndex(tmp_path / "index.sqlite")
    found = inventory.identify_inputs(inventory.iter_inputs(str(media), ""), index)
    assert sorted(os.path.basename(p) for p in hashed) in (["a.wav", "b.wav"], ["b.wav", "link0.wav"])
    keys = {os.path.basename(f.path): f.content_key for f in found}
    assert keys["a.wav"] == keys["link0.wav"] == keys["link2.wav"] == real(clip) != keys["b.wav"] == real(other)
    assert {f.relpath for f in found} == {"a.wav", "b.wav", "link0.wav", "link1.wav", "link2.wav"}
    hashed.clear()
    again = inventory.identify_inputs(inventory.iter_inputs(str(media), ""), index)
    # Every name remembered; only the first path of a content keeps its stat (the shard table's).
    firsts = {f.content_key: f.path for f in reversed(found)}
    assert hashed == [] and again == [dataclasses.replace(f, hashed=False, stat=f.stat if firsts[f.content_key] == f.path
                                                          else "") for f in found]
    assert all(f.stat for f in again if firsts[f.content_key] == f.path)


def test_inputs_that_are_not_regular_files_are_verdicts_and_never_block(tmp_path):
    """A named pipe, a socket and links to endless devices in the input folder: each is that path's one-line
    error in its manifest, and the run finishes (reading any of them would block or never end)."""
    import socket

    from conftest import read_manifests, run_snakemake, write_config

    media = tmp_path / "media"
    make_audio(media / "real.wav", seconds=0.5, sr=16000)
    os.mkfifo(media / "pipe.wav")
    (media / "zeros.wav").symlink_to("/dev/zero")
    (media / "random.flac").symlink_to("/dev/urandom")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(media / "socket.mp3"))
    try:
        config = write_config(tmp_path / "c.yaml", input_dir=str(media), results_dir="results",
                              extractors=["loudness"], cache={"dir": str(tmp_path / "cache")})
        run_snakemake(tmp_path, config, timeout=120)
    finally:
        server.close()
    errors = {Path(m["source"]["path"]).name: m.get("error") for m in read_manifests(tmp_path / "results")}
    assert errors == {"real.wav": None, "pipe.wav": "not a regular file (a named pipe)",
                      "zeros.wav": "not a regular file (a character device)",
                      "random.flac": "not a regular file (a character device)",
                      "socket.mp3": "not a regular file (a socket)"}


def test_path_groups_hold_at_most_the_target_and_growing_moves_few_paths():
    from audiofeat.inputs.inventory import InputFile, content_shard, path_groups

    records = [InputFile(f"/data/{i:05d}.wav", f"{i:05d}.wav", 1, "k", 1.0) for i in range(5000)]
    assert path_groups("n2-001", records[:100], 100) == {"n2-001": records[:100]}
    groups = path_groups("n2-001", records, 100)
    assert max(len(g) for g in groups.values()) <= 100 and sum(len(g) for g in groups.values()) == 5000
    assert {content_shard(name) for name in groups} == {"n2-001"}
    # One more path: it joins one group and every other group keeps its paths.
    grown = path_groups("n2-001", [*records, InputFile("/data/new.wav", "new.wav", 1, "k", 1.0)], 100)
    assert grown.keys() == groups.keys() and sum(grown[name] != groups[name] for name in groups) == 1
