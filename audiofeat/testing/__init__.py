"""Helpers for tests, benchmarks and the demo: media made with ffmpeg, the machine's real recordings, seeded checkpoints. Not used by the pipeline."""
