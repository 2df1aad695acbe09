"""What a run leaves for its users: the ``audio_manifest_v1`` record (:mod:`.manifest`), a shard's manifests and
Parquet parts (:mod:`.shard`), the Parquet dataset and embedding matrix (:mod:`.dataset`), and the run-level
outputs (:mod:`.run`)."""
