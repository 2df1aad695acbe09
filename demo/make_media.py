"""Generate the demo media set (a few small clips, audio and video, plus one bad file) with ffmpeg.

Usage: python demo/make_media.py [OUT_DIR]   (default demo/media; files that exist are kept)
"""
import sys

from audiofeat.testing.media import make_demo_set

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "demo/media"
    for path in make_demo_set(out):
        print(path)
