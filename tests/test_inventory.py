"""Inventory scanning: what the walk finds, and what it says about what it cannot read."""
import logging
import os

from audiofeat.inventory import scan_inputs
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
    with caplog.at_level(logging.WARNING, logger="audiofeat.inventory"):
        found = scan_inputs(str(tmp_path / "media"), "")
    assert found == [(str(clip), "ok.wav")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot list folder" in warnings[0] and "d" * 250 in warnings[0]
    assert "File name too long" in warnings[0]
