"""Run report: ``timings.tsv`` and a self-contained ``index.html`` with inline SVG plots."""
from __future__ import annotations

import html
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from ..clap.checkpoint import checkpoint_file
from ..config.settings import Settings
from ..extractors.clap import ClapSettings, SegmentSettings
from ..outputs.curation import DISTRIBUTIONS, FLAG_RULES, flag_thresholds
from ..store.artifacts import atomic_write_text
from .advice import RunFacts, advise, model_busy_fraction

BAR_COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd")



def load_profiles(paths: list[str]) -> list[dict]:
    """Each job profile, with ``written``: when its job wrote it (the file's mtime)."""
    return [{**json.loads(Path(p).read_text(encoding="utf-8")), "written": os.stat(p).st_mtime} for p in paths]


def stage_totals(profiles: list[dict]) -> dict[str, dict]:
    """Per stage: job wall seconds, files, audio seconds, cache hits/misses, and the split of its seconds."""
    totals: dict[str, dict] = {}
    for p in profiles:
        t = totals.setdefault(p["stage"], {"jobs": 0, "wall_s": 0.0, "files": 0, "failed": 0, "audio_s": 0.0,
                                           "cache_hits": 0, "cache_misses": 0, "seconds": defaultdict(float),
                                           "peak_rss_mb": 0.0, "peak_gpu_mb": None, "worker_s": 0.0})
        t["jobs"] += 1
        t["worker_s"] += p["wall_s"] * p.get("workers", 1)  # what the forward workers could have used
        for key in ("wall_s", "files", "failed", "audio_s", "cache_hits", "cache_misses"):
            t[key] += p[key]
        for name, value in p["seconds"].items():
            t["seconds"][name] += value
        t["peak_rss_mb"] = max(t["peak_rss_mb"], p["peak_rss_mb"])
        if p.get("peak_gpu_mb") is not None:
            t["peak_gpu_mb"] = max(t["peak_gpu_mb"] or 0.0, p["peak_gpu_mb"])
    return totals


def stage_order(totals: dict[str, dict], extractors: tuple[str, ...]) -> list[str]:
    """The stages that ran, in the run's order: decoding, the configured extractors, then any other whose
    profiles are there (an extractor a previous run of this folder chose)."""
    known = ["decode", *extractors]
    return [s for s in known if s in totals] + sorted(s for s in totals if s not in known)


def timings_rows(totals: dict[str, dict], stages: list[str]) -> list[dict]:
    rows = []
    for stage in stages:
        t = totals[stage]
        lookups = t["cache_hits"] + t["cache_misses"]
        rows.append({"stage": stage, "jobs": t["jobs"], "files": t["files"], "failed": t["failed"],
                     "wall_s": round(t["wall_s"], 3), "audio_s": round(t["audio_s"], 3),
                     "x_realtime": round(t["audio_s"] / t["wall_s"], 1) if t["wall_s"] > 0 else "",
                     "cache_hit_rate": round(t["cache_hits"] / lookups, 4) if lookups else "",
                     "peak_rss_mb": t["peak_rss_mb"],
                     "peak_gpu_mb": "" if t["peak_gpu_mb"] is None else t["peak_gpu_mb"],
                     **{f"{k}_s": round(v, 3) for k, v in sorted(t["seconds"].items())}})
    return rows


def svg_bars(labels: list[str], values: list[float], *, xlabel: str, width: int = 600) -> str:
    """Horizontal bar chart as an inline ``<svg>``: one bar per label, its length proportional to its value, and
    the value in the bar's tooltip. Drawn by hand so that the report job needs no plotting library (importing
    matplotlib was most of the report job's time)."""
    left, right, row, top = 90, 20, 28, 10
    scale = (width - left - right) / max(max(values, default=0.0), 1e-12)
    height = top + row * len(labels) + 40
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='12'>"]
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row
        parts.append(f"<text x='{left - 6}' y='{y + row / 2 + 4:.1f}' text-anchor='end'>{html.escape(label)}</text>"
                     f"<rect class='bar' x='{left}' y='{y + 4}' width='{value * scale:.2f}' height='{row - 8}' "
                     f"fill='{BAR_COLOURS[i % len(BAR_COLOURS)]}'><title>{html.escape(label)}: {value:.3f}</title>"
                     "</rect>")
    parts.append(_x_axis(left, top + row * len(labels), width - left - right, max(values, default=0.0), xlabel))
    return "".join(parts) + "</svg>"


def svg_histogram(counts: list[int], edges: tuple[float, ...], *, xlabel: str, unit: str = "s", log: bool = True,
                  width: int = 600, height: int = 220) -> str:
    """Bars of ``counts`` (bin ``i`` spans ``edges[i]`` to ``edges[i + 1]``, in ``unit``) as an inline ``<svg>``,
    without the empty bins at either end; each bar's tooltip gives its range and count."""
    used = [i for i, count in enumerate(counts) if count]
    first, last = used[0], used[-1]
    shown = counts[first:last + 1]
    left, right, top, bottom = 50, 20, 10, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    bar_w = plot_w / len(shown)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='12'>",
             f"<text x='{left - 6}' y='{top + 10}' text-anchor='end'>{max(shown)}</text>",
             f"<text x='{left - 6}' y='{top + plot_h}' text-anchor='end'>0</text>",
             f"<text x='12' y='{top + plot_h / 2:.1f}' transform='rotate(-90 12 {top + plot_h / 2:.1f})' "
             "text-anchor='middle'>files</text>"]
    for i, count in enumerate(shown):
        h = plot_h * count / max(shown)
        a, b = edges[first + i], edges[first + i + 1]
        parts.append(f"<rect class='bar' x='{left + i * bar_w:.2f}' y='{top + plot_h - h:.2f}' "
                     f"width='{max(bar_w - 1, 0.5):.2f}' height='{h:.2f}' fill='{BAR_COLOURS[0]}'>"
                     f"<title>{a:.4g} to {b:.4g} {html.escape(unit)}: {count} files</title></rect>")
    unit_text = html.escape(unit if len(unit) < 6 else "")
    parts.append(f"<text x='{left}' y='{top + plot_h + 16}'>{edges[first]:.3g} {unit_text}</text>"
                 f"<text x='{left + plot_w}' y='{top + plot_h + 16}' text-anchor='end'>"
                 f"{edges[last + 1]:.3g} {unit_text}</text>"
                 f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#333'/>"
                 f"<text x='{left + plot_w / 2:.1f}' y='{top + plot_h + 34}' text-anchor='middle'>"
                 f"{html.escape(xlabel)}{' (log scale)' if log else ''}</text>")
    return "".join(parts) + "</svg>"


def _x_axis(x0: int, y0: float, length: float, end: float, label: str, start: float = 0.0) -> str:
    ticks = "".join(f"<text x='{x0 + length * f:.1f}' y='{y0 + 16}' text-anchor='middle'>"
                    f"{start + (end - start) * f:.3g}</text>" for f in (0, 0.5, 1))
    return (f"<line x1='{x0}' y1='{y0}' x2='{x0 + length}' y2='{y0}' stroke='#333'/>{ticks}"
            f"<text x='{x0 + length / 2:.1f}' y='{y0 + 34}' text-anchor='middle'>{html.escape(label)}</text>")


def _plots(totals: dict[str, dict], stages: list[str], cost_histogram: list[int]) -> list[tuple[str, str]]:
    from ..outputs.shard import COST_BINS

    names = stages
    plots = [("Time per stage", svg_bars(names, [totals[s]["wall_s"] for s in names],
                                         xlabel="seconds (sum of job wall times)"))]
    if any(cost_histogram):
        plots.append(("Per-file cost", svg_histogram(cost_histogram, (0.0, *COST_BINS, float("inf")),
                                                     xlabel="seconds per file (decoding and every extractor)")))
    return plots


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def run_facts(totals: dict, profiles: list[dict], settings: Settings, previous: dict | None) -> RunFacts:
    """The numbers and machine facts :mod:`audiofeat.report.advice` reads, for this run; ``previous`` is the last
    finished run's state in this results folder (its store and when it finished), None before the first."""
    from ..clap.model import likely_device  # torch-free

    clap = next((p for p in profiles if p["stage"] == "clap" and "device" in p), None)
    cache = settings.cache
    try:
        usage = shutil.disk_usage(settings.store_dir())
        free, total = usage.free, usage.total
    except OSError:
        free = total = None
    return RunFacts(totals, device_setting=settings.perf.device, clap_device=clap["device"] if clap else "",
                    gpu_visible=likely_device("auto") != "cpu", cache_enabled=cache.enabled,
                    cache_dir=os.path.abspath(cache.dir), previous_cache_dir=previous and previous["cache_dir"],
                    rerun_lookups=_lookups_since(profiles, previous["finished"]) if previous else None,
                    disk_free_bytes=free, disk_total_bytes=total)


def _lookups_since(profiles: list[dict], finished: float) -> tuple[int, int] | None:
    """Store hits and misses of the shard jobs that ran after ``finished`` (a shard that did not rerun keeps the
    profile of the run that made it); None when none did."""
    recent = [p for p in profiles if p["written"] > finished]
    if not recent:
        return None
    return sum(p["cache_hits"] for p in recent), sum(p["cache_misses"] for p in recent)


def _groups_html(groups: list[dict], results_link: str, *, titles: dict, where_all: str) -> str:
    """Groups of files (failures by cause, flagged files by reason), each file linked to its manifest where
    manifests are written (the first few; the rest counted); ``titles``: each group's heading by its name."""
    if not groups:
        return "<p>none</p>"
    parts = []
    for group in groups:
        items = "".join(f"<li><a href='{html.escape(results_link + f['manifest'], quote=True)}'>"
                        f"{html.escape(f['path'])}</a></li>" if "manifest" in f else
                        f"<li>{html.escape(f['path'])}</li>" for f in group["files"])
        more = f"<li>and {group['more']} more ({where_all})</li>" if group["more"] else ""
        name = group.get("cause") or group["reason"]
        parts.append(f"<h3>{html.escape(titles.get(name, name))}: {group['count']}</h3><ul>{items}{more}</ul>")
    return "".join(parts)


def _curation_html(curation: dict, settings: Settings, results_link: str) -> list[str]:
    """The distributions of the extractors' main numbers that ran, and the flagged files by reason with the
    thresholds that flagged them."""
    parts = ["<h2 id='distributions'>Distributions</h2>"]
    for d in DISTRIBUTIONS:
        counts = curation["distributions"].get(d.title, [])
        if any(counts):
            edges = d.edges
            lo, hi = ((edges[0] ** 2 / edges[1], edges[-1] ** 2 / edges[-2]) if d.log
                      else (2 * edges[0] - edges[1], 2 * edges[-1] - edges[-2]))
            parts.append(f"<h3>{html.escape(d.title)}</h3>" + svg_histogram(
                counts, (lo, *edges, hi), xlabel=f"{d.title} ({d.unit})", unit=d.unit, log=d.log))
    reasons = [rule.reason for rule in FLAG_RULES if rule.extractor in settings.extractors]
    parts.append("<h2 id='flagged'>Flagged files</h2>")
    if not reasons:
        return parts + ["<p>no extractor that flags files ran (loudness, speech, speech_quality)</p>"]
    rules = flag_thresholds(settings.flags)
    parts.append("<p>Judged: " + html.escape("; ".join(f"{r} ({rules[r]})" for r in reasons)) + ".</p>")
    return parts + [_groups_html(curation["flagged"], results_link, where_all="the dataset's <code>flags</code>",
                                 titles={r: f"{r} ({rules[r]})" for r in reasons})]


def write_report(profile_paths: list[str], finalized, settings: Settings, html_path: str, tsv_path: str,
                 run_state_path: str, *, clap_weights: str | None = None) -> dict:
    """Write the run's ``timings.tsv`` and ``index.html``; returns the numbers shown.

    ``finalized`` is :func:`audiofeat.outputs.run.run_finalize`'s result: the summary, the slowest files and the
    histogram of per-file costs (each the sum of a manifest's timings). ``run_state_path`` remembers this run's
    store for the next run's advice (a results folder finished before with another ``cache.dir``).
    ``clap_weights`` is the CLAP extractor's weights identity, when CLAP ran (named in the header).
    """
    summary = finalized.summary
    profiles = load_profiles(profile_paths)
    totals = stage_totals(profiles)
    stages = stage_order(totals, settings.extractors)
    rows = timings_rows(totals, stages)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tsv = "\t".join(columns) + "\n" + "".join("\t".join(str(r.get(c, "")) for c in columns) + "\n" for r in rows)
    atomic_write_text(tsv_path, tsv)
    try:
        previous = json.loads(Path(run_state_path).read_text(encoding="utf-8"))
        previous = {"cache_dir": previous["cache_dir"], "finished": float(previous["finished"])}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        previous = None
    advice = advise(run_facts(totals, profiles, settings, previous))
    busy = model_busy_fraction(totals)
    numbers = {"stage_wall_s": {r["stage"]: r["wall_s"] for r in rows}, "model_busy_fraction": busy,
               "ok": summary["ok"], "failed": summary["failed"], "advice": advice}
    results_link = os.path.relpath(settings.results_dir, os.path.dirname(html_path)) + "/"
    weights = weights_line(settings, clap_weights) if "clap" in settings.extractors else None
    atomic_write_text(html_path, _report_html(finalized, rows, (totals, stages), busy, advice, profiles, settings,
                                              results_link, weights))
    atomic_write_text(run_state_path, json.dumps({"cache_dir": os.path.abspath(settings.cache.dir),
                                                  "finished": time.time()}))
    return numbers


def weights_line(settings: Settings, weights: str | None) -> str:
    """What made the embeddings, for the report's header: the checkpoint file and its sha256, or a warning
    that seeded random weights carry no meaning."""
    if weights and weights.startswith("random("):
        return f"Seeded random weights ({weights}): embeddings carry no meaning"
    path = checkpoint_file(settings.of(ClapSettings), settings.cache.dir)
    digest = weights.rsplit(":", 1)[-1] if weights else "not known"
    return f"CLAP weights: {path.name if path else 'none'} (sha256 {digest})"


def _report_html(finalized, rows, totals_and_stages, busy, advice, profiles, settings, results_link, weights) -> str:
    summary, slowest = finalized.summary, finalized.slowest
    totals, stages = totals_and_stages
    clap_profiles = [p for p in profiles if p["stage"] == "clap" and "device" in p]
    shown = {"extractors": ", ".join(settings.extractors),
             "threads per job": settings.perf.threads or "min(8, cores)",
             "device": clap_profiles[0]["device"] if clap_profiles else settings.perf.device,
             "precision": clap_profiles[0]["precision"] if clap_profiles else "",
             "max_batch_audio_seconds": settings.of(ClapSettings).max_batch_audio_seconds,
             "segment": json.dumps(settings.of(SegmentSettings).to_dict()),
             "cache": settings.cache.dir if settings.cache.enabled else "disabled"}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>audiofeat run report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
        "display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #bbb;padding:3px 8px;"
        "text-align:right}th{background:#eef}li{overflow-wrap:anywhere}</style></head><body>",
        "<h1>audiofeat run report</h1>",
        f"<p><b>{summary['ok']} ok, {summary['failed']} failed</b>. "
        f"Sum of job wall times: {sum(r['wall_s'] for r in rows):.2f} s.</p>",
        f"<p id='weights'><b>{html.escape(weights)}</b></p>" if weights else "",
        "<p>Model-busy fraction (CLAP forward ÷ CLAP job wall time): "
        + ("n/a (every embedding came from the cache)" if busy is None else f"<b>{busy:.2f}</b>") + "</p>",
        "<h2 id='advice'>Advice</h2>",
        "<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in advice) + "</ul>" if advice
        else "<p>none: no rule fired on this run's numbers</p>",
        "<h2>Stages</h2>", _table(rows),
    ]
    for title, svg in _plots(totals, stages, finalized.cost_histogram):
        parts.append(f"<h2>{html.escape(title)}</h2>{svg}")
    parts += ["<h2>Slowest files</h2>", _table([{"file": p, "seconds": round(s, 4)} for p, s in slowest]),
              "<h2 id='failures'>Failures by cause</h2>",
              _groups_html(summary.get("failures", []), results_link, titles={},
                           where_all="every failed file: <code>summary.json</code>, <code>failed_files</code>"),
              *_curation_html(finalized.curation, settings, results_link),
              "<h2>Settings</h2>", _table([{"setting": k, "value": v} for k, v in shown.items()]),
              "</body></html>"]
    return "\n".join(parts)
