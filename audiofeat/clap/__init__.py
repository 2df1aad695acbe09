"""LAION CLAP's audio tower: laion-clap's module code loaded offline (:mod:`.laion`), a lean forward path
(:mod:`.forward`), checkpoints (:mod:`.checkpoint`), the process's model cache (:mod:`.model`), micro-batching
(:mod:`.embed`) and windows (:mod:`.windows`). The extractor is :mod:`audiofeat.extractors.clap`."""

MODEL_SAMPLE_RATE = 48000
MODEL_INPUT_SAMPLES = 480000  # 10 s: HTSAT's clip_samples
EMBEDDING_DIM = 512  # LAION CLAP's joint embedding space
