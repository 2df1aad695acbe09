"""The speed-ups that reach into other projects' internals: each works, and AUDIOFEAT_SPEEDUPS=off turns it off."""
import subprocess
import sys
import threading

import pytest

from audiofeat import _speedups
from audiofeat._speedups import cancel_wakeup_timers

from conftest import REPO


def test_cancel_wakeup_timers_ends_snakemakes_and_only_those():
    import types

    from snakemake.scheduling.job_scheduler import JobScheduler

    woken = threading.Semaphore(0)
    # Snakemake's own wake-up, as its scheduler starts it after a submission (0.2 s here, so that a wake-up that
    # was not cancelled fires within the wait below).
    JobScheduler._schedule_reevalutation(types.SimpleNamespace(_open_jobs=woken), 0.2)
    others = threading.Timer(60, lambda: None)
    others.start()
    try:
        assert cancel_wakeup_timers() == 1
        assert others.is_alive() and not others.finished.is_set()
        assert not woken.acquire(timeout=0.6)  # cancelled: it never fires
        assert cancel_wakeup_timers() == 0
        JobScheduler._schedule_reevalutation(types.SimpleNamespace(_open_jobs=woken), 0.2)
        assert woken.acquire(timeout=5)  # the control: left alone, it fires
    finally:
        others.cancel()


SPARE_EXIT_COLLECTION = """
import gc
from audiofeat._speedups import spare_exit_collection

class Node:
    pass

before = Node()
before.self = before  # a reference cycle made during the run
tracked = len(gc.get_objects())
spare_exit_collection()
print(gc.get_freeze_count() >= tracked)
del before
print(gc.collect())  # the run's objects are no longer traced
after = Node()
after.self = after
del after
print(gc.collect())  # what is allocated afterwards is collected as usual
"""


def test_spare_exit_collection_freezes_the_run_heap_and_only_it():
    done = subprocess.run([sys.executable, "-c", SPARE_EXIT_COLLECTION], capture_output=True, text=True, check=True,
                          cwd=str(REPO))
    frozen, before, after = done.stdout.split()
    assert frozen == "True" and before == "0" and int(after) >= 1


def test_the_switch_turns_every_hook_off(monkeypatch):
    from snakemake.scheduling.job_scheduler import JobScheduler
    import types

    monkeypatch.setenv(_speedups.SWITCH, "off")
    woken = threading.Semaphore(0)
    JobScheduler._schedule_reevalutation(types.SimpleNamespace(_open_jobs=woken), 0.2)
    assert cancel_wakeup_timers() == 0 and woken.acquire(timeout=5)  # left to fire
    assert _speedups.retain_freed_memory() is False
    assert _speedups.laion_utils_imports_skipped() == ()
    done = subprocess.run([sys.executable, "-c", SPARE_EXIT_COLLECTION], capture_output=True, text=True, check=True,
                          cwd=str(REPO), env={**__import__("os").environ, _speedups.SWITCH: "off"})
    assert done.stdout.split()[0] == "False"  # nothing frozen
    import torch.nn.init
    import torchlibrosa.stft

    from audiofeat.clap.laion import laion_module

    librosa_module, uniform = torchlibrosa.stft.librosa, torch.nn.init.uniform_
    with _speedups.torchlibrosa_constants():
        assert torchlibrosa.stft.librosa is librosa_module  # librosa's own window and filters
    with _speedups.random_init_skipped(laion_module("htsat")):
        assert torch.nn.init.uniform_ is uniform
    with pytest.raises(SystemExit):  # a normal exit: os._exit would end pytest here
        _speedups.fast_exit()


def test_the_fused_cpu_kernels_follow_the_switch(monkeypatch):
    import torch

    x = torch.zeros(2, 4)
    with torch.inference_mode():
        assert _speedups._onednn(x) == torch.backends.mkldnn.is_available()
        monkeypatch.setenv(_speedups.SWITCH, "off")
        assert not _speedups._onednn(x)
