"""Speech quality (DNSMOS through speechmos: its ONNX models from its wheel): SIG, BAK and OVRL, and the P.808 MOS.

DNSMOS scores 9.01 s segments of 16 kHz audio, one starting every second, and averages them. The decoded WAV is
resampled to 16 kHz (soxr HQ, streamed) and each segment is scored with speechmos's own model sessions and mel
spectrogram as it arrives, so a long file holds about 11 s of audio at a time, not all of it; a file shorter than
one segment is repeated to fill it, as speechmos does. Equal to ``speechmos.dnsmos.run`` on the same 16 kHz audio
(tested).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import orjson

from ..faults import Verdict
from ..inputs.media import RESAMPLER
from ..inputs.wav import WavReader
from ..store.tables import DecodeRecord
from .base import Computed, Extractor
from .speech import VAD_RATE, audio_16k, package_folder

SEGMENT_S = 9.01  # DNSMOS's input length (speechmos's INPUT_LENGTH)


@dataclass(frozen=True)
class SpeechQualityParams:
    models_digest: str  # of speechmos's ONNX files
    sample_rate: int = VAD_RATE
    resampler: str = RESAMPLER
    personalized: bool = False


MODELS = ("sig_bak_ovr.onnx", "model_v8.onnx")  # in speechmos's dnsmos_models folder: DNSMOS and its P.808


@lru_cache(maxsize=1)
def models_digest() -> str:
    """BLAKE2b-128 of the two ONNX models speechmos's DNSMOS runs (read without importing speechmos, which imports
    librosa and onnxruntime)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in MODELS:
        digest.update((package_folder("speechmos") / "dnsmos_models" / name).read_bytes())
    return digest.hexdigest()


def _scorer():
    """speechmos's DNSMOS with its own model files (what ``dnsmos.run`` builds), its two sessions on one thread
    each: the job scores a file per thread (``perf.threads``), where onnxruntime's default took every core."""
    import onnxruntime as ort
    from speechmos import dnsmos

    class OneThreadDNSMOS(dnsmos.DNSMOS):
        def __init__(self, primary_model_path: str, p808_model_path: str) -> None:
            # speechmos's __init__ builds both sessions with onnxruntime's defaults: built once here instead.
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            self.primary_model_path = primary_model_path
            self.onnx_sess, self.p808_onnx_sess = (
                ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
                for path in (primary_model_path, p808_model_path))

    return OneThreadDNSMOS(*(str(package_folder("speechmos") / "dnsmos_models" / name) for name in MODELS))


def score_segment(scorer, segment: np.ndarray) -> tuple[float, float, float, float]:
    """``(sig, bak, ovrl, p808)`` of one 9.01 s segment, as speechmos computes each."""
    features = segment.astype("float32")[np.newaxis, :]
    mel = np.array(scorer.audio_melspec(audio=segment[:-160])).astype("float32")[np.newaxis, :, :]
    p808 = scorer.p808_onnx_sess.run(None, {"input_1": mel})[0][0][0]
    sig, bak, ovrl = scorer.onnx_sess.run(None, {"input_1": features})[0][0]
    sig, bak, ovrl = scorer.get_polyfit_val(sig, bak, ovrl, False)
    return float(sig), float(bak), float(ovrl), float(p808)


class _Segments:
    """DNSMOS's segments of a 16 kHz stream, scored as soon as it is certain speechmos scores them: segment
    ``i`` spans ``[i, i + 9.01)`` s, and a file of ``k`` whole seconds has ``max(1, k - 9)`` of them."""

    def __init__(self, scorer) -> None:
        self.scorer, self.scores = scorer, []
        self.buffer, self.offset, self.samples, self.next = np.zeros(0, np.float32), 0, 0, 0

    def feed(self, chunk: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, chunk]) if self.buffer.size else chunk
        self.samples += chunk.shape[0]
        if self.samples >= int(SEGMENT_S * VAD_RATE):  # a shorter file is repeated at the end: keep it whole
            self._score_up_to(max(1, self.samples // VAD_RATE - 9))

    def _score_up_to(self, count: int) -> None:
        while self.next < count:
            start, stop = int(self.next * VAD_RATE), int((self.next + SEGMENT_S) * VAD_RATE)
            if stop - start == int(SEGMENT_S * VAD_RATE):  # a float end one sample short: speechmos skips it
                self.scores.append(score_segment(self.scorer, self.buffer[start - self.offset: stop - self.offset]))
            self.next += 1
            drop = int(self.next * VAD_RATE) - self.offset
            self.buffer, self.offset = self.buffer[drop:], self.offset + drop

    def finish(self) -> list[tuple]:
        if not self.samples:
            raise Verdict("no audio left at 16 kHz")
        if self.samples < int(SEGMENT_S * VAD_RATE):  # speechmos doubles a short file until a segment fits
            while self.buffer.shape[0] < int(SEGMENT_S * VAD_RATE):
                self.buffer = np.append(self.buffer, self.buffer)
            self.samples = self.buffer.shape[0]
        self._score_up_to(max(1, self.samples // VAD_RATE - 9))
        return self.scores


def quality_block(scores: list[tuple]) -> dict:
    """The manifest's ``speech_quality`` block: each MOS averaged over the segments."""
    sig, bak, ovrl, p808 = (float(np.mean(values)) for values in zip(*scores))
    return {"sig_mos": round(sig, 6), "bak_mos": round(bak, 6), "ovrl_mos": round(ovrl, 6),
            "p808_mos": round(p808, 6), "segments": len(scores)}


class SpeechQualityExtractor(Extractor):
    name = "speech_quality"
    version = "1"  # bump when the block changes for the same audio and parameters
    _mos = {"type": "number", "minimum": 0, "maximum": 6}
    block_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["sig_mos", "bak_mos", "ovrl_mos", "p808_mos", "segments"],
        "properties": {"sig_mos": _mos, "bak_mos": _mos, "ovrl_mos": _mos, "p808_mos": _mos,
                       "segments": {"type": "integer", "minimum": 1}},
    }

    @classmethod
    def from_settings(cls, settings, *, job: bool = False) -> "SpeechQualityExtractor":
        from .decode import DecodeExtractor

        return cls(SpeechQualityParams(models_digest()),
                   wav_params_hash=DecodeExtractor.from_settings(settings).params_hash)

    @property
    def scorer(self):
        if not hasattr(self, "_scorer"):
            self._scorer = _scorer()  # ONNX Runtime sessions may be run from several threads at once
        return self._scorer

    def compute_one(self, file: DecodeRecord) -> Computed:
        segments = _Segments(self.scorer)
        with WavReader(file.wav) as wav:
            for chunk in audio_16k(wav):
                segments.feed(np.clip(chunk, -1.0, 1.0))  # speechmos refuses samples beyond full scale
        return Computed(orjson.dumps(quality_block(segments.finish()), option=orjson.OPT_SORT_KEYS), {})
