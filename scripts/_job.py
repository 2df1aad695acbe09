"""Shared set-up of the rule scripts: thread counts before heavy imports, logging into the rule's log file."""
import logging
import os
import sys


def start(snakemake) -> logging.Logger:
    """Call first in every rule script: pins threads, sends logging and stderr to ``snakemake.log[0]``."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from audiofeat.config import set_thread_env  # light: no numpy or torch behind it

    set_thread_env(snakemake.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in a job may wait on the model hub
    handle = open(snakemake.log[0], "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    sys.stderr = handle
    logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    logging.captureWarnings(True)
    log = logging.getLogger("audiofeat.job")
    sys.excepthook = _fault_hook(snakemake.config, log)
    return log


def _fault_hook(config, log):
    """An uncaught fault (a full disk, a folder the job may not write, an input that changed...) ends the job
    with one line, on the terminal and in the log, instead of a traceback; the job fails, so Snakemake takes none
    of its outputs as complete. Anything else (a bug) keeps its traceback, in the log."""
    from audiofeat.faults import fault_line, is_fault

    roots = {"cache.dir": config["cache"]["dir"], "results_dir": config["results_dir"],
             "input_dir": config["input_dir"]}
    default = sys.excepthook

    def hook(kind, exc, tb):
        if not is_fault(exc):
            return default(kind, exc, tb)
        line = fault_line(exc, {k: v for k, v in roots.items() if v})
        log.error("fault: %s", line)
        print(f"audiofeat: {line}", file=sys.__stderr__, flush=True)

    return hook


def finish() -> None:
    """Call last in every rule script, after its outputs are written: ends the process without the interpreter's
    teardown. Tearing down torch's or numba's modules takes about 0.5 s per job (measured: `import torch`, then a
    normal exit, 0.5 s; `os._exit`, 0.05 s) and has nothing left to do: every output is written and closed, and
    the store's writes were fsynced. An exception never gets here, so a failing job still exits the normal way."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    os._exit(0)
