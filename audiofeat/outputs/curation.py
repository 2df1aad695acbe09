"""What a curator looks at: each input's flags (clipped, silent, upsampled, no speech, low speech quality) under
the config's thresholds, and each extractor's main numbers, counted into fixed bins so that the counts of a
shard's parts, and of a run's shards, add up without reading a manifest twice.

A flag or a number needs its extractor in the run: without ``loudness`` no file is flagged clipped.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable

from ..config.settings import FlagsSettings

FLAGS_LISTED_PER_REASON = 50


@dataclass(frozen=True)
class FlagRule:
    """A reason to flag an input: the extractor whose block decides, the test, the threshold's setting, and the
    test in words (``{}`` for the threshold), for the report."""

    reason: str
    extractor: str
    setting: str
    test: Callable[[dict, float], bool]
    words: str


FLAG_RULES = (
    FlagRule("clipped", "loudness", "clipping_ratio", lambda b, t: b["clipping_ratio"] >= t,
             "loudness.clipping_ratio >= {}"),
    FlagRule("silent", "loudness", "silent_frame_ratio", lambda b, t: b["silent_frame_ratio"] >= t,
             "loudness.silent_frame_ratio >= {}"),
    FlagRule("upsampled", "loudness", "upsampled_bandwidth",
             lambda b, t: b["effective_bandwidth_hz"] < t * b["sample_rate"] / 2,
             "effective bandwidth < {} x Nyquist"),
    FlagRule("no speech", "speech", "no_speech_ratio", lambda b, t: b["speech_ratio"] < t,
             "speech.speech_ratio < {}"),
    FlagRule("low speech quality", "speech_quality", "low_quality_mos", lambda b, t: b["ovrl_mos"] < t,
             "speech_quality.ovrl_mos < {}"),
)


def input_flags(manifest: dict, thresholds: FlagsSettings) -> list[str]:
    """The reasons ``manifest`` (a dict) is flagged for, in :data:`FLAG_RULES`' order; none for a failed input."""
    if manifest.get("status") != "ok":
        return []
    return [rule.reason for rule in FLAG_RULES if rule.extractor in manifest
            and rule.test(manifest[rule.extractor], getattr(thresholds, rule.setting))]


def flag_thresholds(thresholds: FlagsSettings) -> dict[str, str]:
    """``{reason: its rule in words}``, for the report."""
    return {rule.reason: rule.words.format(getattr(thresholds, rule.setting)) for rule in FLAG_RULES}


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(start + k * step, 6) for k in range(int(round((stop - start) / step)) + 1))


@dataclass(frozen=True)
class Distribution:
    """A main number of an extractor's block (``block`` ``audio`` is the decoded audio), counted in the bins that
    ``edges`` bound (one more bin below the first edge and one above the last)."""

    title: str
    block: str
    field: str
    unit: str
    edges: tuple[float, ...]
    log: bool = False

    def bin(self, value: float) -> int:
        return bisect.bisect(self.edges, value)


DISTRIBUTIONS = (
    Distribution("Duration", "audio", "duration_s", "s", tuple(10 ** (k / 4) for k in range(-4, 23)), log=True),
    Distribution("Integrated loudness", "loudness", "integrated_lufs", "LUFS", _steps(-70, 0, 2)),
    Distribution("Speech ratio", "speech", "speech_ratio", "share of the file", _steps(0, 1, 0.05)),
    Distribution("Median pitch", "pitch", "f0_median_hz", "Hz", tuple(50 * 2 ** (k / 4) for k in range(19)),
                 log=True),
    Distribution("Speech quality (DNSMOS overall)", "speech_quality", "ovrl_mos", "MOS", _steps(1, 5, 0.2)),
)


def main_numbers(manifest: dict) -> list[float | None]:
    """Each :data:`DISTRIBUTIONS` number of ``manifest`` (None where its block is absent or the value null)."""
    values = []
    for d in DISTRIBUTIONS:
        value = (manifest.get(d.block) or {}).get(d.field) if manifest.get("status") == "ok" else None
        values.append(value if isinstance(value, (int, float)) and math.isfinite(value) else None)
    return values


class CurationCounts:
    """Flagged inputs by reason (the first few listed) and the distributions' bin counts, added a row at a time;
    :meth:`merge` adds another's (a shard's into the run's)."""

    def __init__(self) -> None:
        self.flagged: dict[str, dict] = {}
        self.counts = {d.title: [0] * (len(d.edges) + 1) for d in DISTRIBUTIONS}

    def add(self, flags: list[str], numbers: list[float | None], listed: dict) -> None:
        for reason in flags:
            group = self.flagged.setdefault(reason, {"count": 0, "files": []})
            group["count"] += 1
            if len(group["files"]) < FLAGS_LISTED_PER_REASON:
                group["files"].append(listed)
        for d, value in zip(DISTRIBUTIONS, numbers):
            if value is not None:
                self.counts[d.title][d.bin(value)] += 1

    def merge(self, data: dict) -> None:
        for group in data.get("flagged", []):  # a shard summary written before flags has none
            mine = self.flagged.setdefault(group["reason"], {"count": 0, "files": []})
            mine["count"] += group["count"]
            mine["files"] += group["files"][:FLAGS_LISTED_PER_REASON - len(mine["files"])]
        for title, counts in data.get("distributions", {}).items():
            if title in self.counts:
                self.counts[title] = [a + b for a, b in zip(self.counts[title], counts)]

    def to_dict(self) -> dict:
        order = [rule.reason for rule in FLAG_RULES]
        return {"flagged": [{"reason": r, "count": self.flagged[r]["count"], "files": self.flagged[r]["files"],
                             "more": self.flagged[r]["count"] - len(self.flagged[r]["files"])}
                            for r in order if r in self.flagged],
                "distributions": self.counts}
