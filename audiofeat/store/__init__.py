"""Where work is kept: the content-addressed artifact store (:mod:`.artifacts`) and the shard tables jobs hand
each other (:mod:`.tables`)."""
from .artifacts import ArtifactKey, ArtifactStore, StoredArtifact
from .tables import DecodeRecord, ExtractRecord

__all__ = ["ArtifactKey", "ArtifactStore", "ExtractRecord", "DecodeRecord", "StoredArtifact"]
