"""Shared set-up of the rule scripts: thread counts before heavy imports, logging into the rule's log file, the
run's typed settings, and one line (not a traceback) for a fault."""
import logging
import os
import sys


def start(snakemake):
    """Call first in every rule script: pins threads, sends logging and stderr to ``snakemake.log[0]``, installs
    the fault hook; returns ``(logger, Settings)``."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from audiofeat.config.schema import set_thread_env  # light: no numpy or torch behind it
    from audiofeat.config.settings import Settings

    set_thread_env(snakemake.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in a job may wait on the model hub
    handle = open(snakemake.log[0], "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    sys.stderr = handle
    logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    logging.captureWarnings(True)
    log = logging.getLogger("audiofeat.job")
    settings = Settings.from_config(snakemake.config)
    sys.excepthook = _fault_hook(settings, log)
    return log, settings


def _fault_hook(settings, log):
    """An uncaught fault (a full disk, a folder the job may not write, an input that changed...) ends the job
    with one line, on the terminal and in the log, instead of a traceback; the job fails, so Snakemake takes none
    of its outputs as complete. Anything else (a bug) keeps its traceback, in the log."""
    from audiofeat.faults import fault_line, is_fault

    roots = {"cache.dir": settings.cache.dir, "results_dir": settings.results_dir, "input_dir": settings.input_dir}
    default = sys.excepthook

    def hook(kind, exc, tb):
        if not is_fault(exc):
            return default(kind, exc, tb)
        line = fault_line(exc, {k: v for k, v in roots.items() if v})
        log.error("fault: %s", line)
        print(f"audiofeat: {line}", file=sys.__stderr__, flush=True)

    return hook


def finish() -> None:
    """Call last in every rule script, after its outputs are written."""
    from audiofeat._speedups import fast_exit

    fast_exit()
