"""audiofeat: media folder -> 48 kHz mono WAV -> audio features and CLAP embeddings, with manifests.

``audiofeat.extract(paths, ...)`` is the Python API (:mod:`audiofeat.api`); the workflow is the Snakefile.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: the workflow's processes import this package for light modules only.
    if name in ("extract", "Extraction"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'audiofeat' has no attribute {name!r}")
