"""laion-clap's ``clap_module`` code, imported offline under a private package name.

``import laion_clap`` loads text tokenizers from the model hub at import time, and ``CLAP_Module`` builds the text
tower from the hub. We need neither: the ``laion_clap/clap_module`` folder is mounted under a private package name
(without running laion-clap's ``__init__`` files) so that ``htsat.py`` and its relatives import offline.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

from .. import _speedups

_PRIVATE_PACKAGE = "_audiofeat_laion_clap"


def _clap_module_dir() -> Path:
    spec = importlib.util.find_spec("laion_clap")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("laion-clap is not installed: pip install --no-deps laion-clap==1.1.7 (its numpy<2 pin is not a need of the module code used here)")
    return Path(list(spec.submodule_search_locations)[0]) / "clap_module"


def _load_laion_utils(package: str) -> None:
    """Run laion's ``utils.py`` as ``<package>.utils`` without its training-only imports (a function that needed
    one would raise NameError when called; the audio tower calls none)."""
    path = _clap_module_dir() / "utils.py"
    tree = ast.parse(path.read_text(), filename=str(path))

    def skipped(node) -> bool:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        return any(n.split(".")[0] in _speedups.laion_utils_imports_skipped() for n in names)

    tree.body = [node for node in tree.body if not skipped(node)]
    module = types.ModuleType(f"{package}.utils")
    module.__file__ = str(path)
    module.__package__ = package
    exec(compile(tree, str(path), "exec"), module.__dict__)  # noqa: S102 - laion-clap's own installed source
    sys.modules[module.__name__] = module


def laion_module(name: str) -> types.ModuleType:
    """Import ``laion_clap.clap_module.<name>`` offline, under a private package name."""
    package = f"{_PRIVATE_PACKAGE}.clap_module"
    if package not in sys.modules:
        root = types.ModuleType(_PRIVATE_PACKAGE)
        root.__path__ = []
        sub = types.ModuleType(package)
        sub.__path__ = [str(_clap_module_dir())]
        sys.modules.setdefault(_PRIVATE_PACKAGE, root)
        sys.modules.setdefault(package, sub)
        _load_laion_utils(package)
    return importlib.import_module(f"{package}.{name}")


def audio_config(model_name: str) -> dict:
    """``audio_cfg`` and ``embed_dim`` of a laion-clap model config (``HTSAT-tiny``, ``HTSAT-base``)."""
    path = _clap_module_dir() / "model_configs" / f"{model_name}.json"
    if not path.exists():
        raise ValueError(f"unknown CLAP model {model_name!r}")
    return json.loads(path.read_text())
