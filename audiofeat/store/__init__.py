"""Where work is kept: the content-addressed artifact store (:mod:`.artifacts`) and the shard tables jobs hand
each other (:mod:`.tables`)."""
from .artifacts import ArtifactKey, ArtifactStore, StoredArtifact
from .tables import ExtractRecord, IngestRecord

__all__ = ["ArtifactKey", "ArtifactStore", "ExtractRecord", "IngestRecord", "StoredArtifact"]
