"""Extractors: the interface (:mod:`.base`), each extractor, the registry a run chooses from (:mod:`.registry`),
and what runs them: the shard runner, thread claims, GPU slots and job profiles."""
from .base import Computed, Extractor
from .decode import DecodeExtractor
from .registry import EXTRACTORS, build_extractors, section_schemas

__all__ = ["EXTRACTORS", "Computed", "DecodeExtractor", "Extractor", "build_extractors", "section_schemas"]
