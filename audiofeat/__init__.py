"""audiofeat: media folder -> 48 kHz mono WAV -> log-mel/MFCC statistics and CLAP embeddings, with manifests."""

__version__ = "0.1.0"
