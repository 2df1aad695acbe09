"""The extractor registry: every extractor a run can choose (config key ``extractors``), by name.

Decoding is an extractor too (:class:`DecodeExtractor`), but every run decodes, so it is not chosen here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..config.schema import ConfigError
from .base import Extractor
from .clap import ClapExtractor
from .features import FeaturesExtractor
from .loudness import LoudnessExtractor
from .pitch import PitchExtractor
from .speaker import SpeakerExtractor
from .spectral import SpectralExtractor
from .speech import SpeechExtractor
from .speech_quality import SpeechQualityExtractor

if TYPE_CHECKING:
    from ..config.settings import Settings

EXTRACTORS: dict[str, type[Extractor]] = {
    "features": FeaturesExtractor,
    "clap": ClapExtractor,
    "loudness": LoudnessExtractor,
    "speech": SpeechExtractor,
    "speech_quality": SpeechQualityExtractor,
    "pitch": PitchExtractor,
    "speaker": SpeakerExtractor,
    "spectral": SpectralExtractor,
}


def section_schemas() -> dict[str, dict]:
    """The JSON Schema of every registered extractor's own config sections, by config key."""
    return {section.name: section.json_schema() for kind in EXTRACTORS.values()
            for section in kind.settings_sections}


def build_extractors(settings: "Settings", *, job: bool = False) -> dict[str, Extractor]:
    """The run's chosen extractors, in the configured order (see :meth:`Extractor.from_settings` for ``job``).
    Raises :class:`ConfigError` for a name not registered: the registry, not the schema, knows the names."""
    unknown = [name for name in settings.extractors if name not in EXTRACTORS]
    if unknown:
        raise ConfigError(f"config key extractors: {', '.join(map(repr, unknown))} unknown; allowed values: "
                          f"{', '.join(EXTRACTORS)}")
    return {name: EXTRACTORS[name].from_settings(settings, job=job) for name in settings.extractors}

