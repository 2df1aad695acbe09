"""The ``audiofeat`` console script: ``audiofeat status``, ``audiofeat cache stats``, ``audiofeat cache gc``,
``audiofeat cache verify``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config.schema import ConfigError
from .config.settings import CacheSettings, load_settings
from .extractors.registry import section_schemas
from .store.artifacts import ArtifactStore


def _cache_settings(args: argparse.Namespace) -> CacheSettings:
    """cache.* as the workflow reads it (``--config``, default ``config/config.yaml`` when present, then the
    environment's overrides), then this command's flags."""
    config_path = Path(args.config) if args.config else Path("config/config.yaml")
    if args.config and not config_path.exists():
        sys.exit(f"audiofeat: config file {args.config} does not exist")
    flags = {key: getattr(args, key) for key in ("dir", "ttl_hours", "max_gb", "gc_grace_hours")
             if getattr(args, key, None) is not None}
    try:
        return load_settings(config_path if config_path.exists() else None, sections=section_schemas(),
                             overrides={"cache": flags}).cache
    except ConfigError as exc:
        sys.exit(f"audiofeat: {exc}")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def cmd_stats(args: argparse.Namespace) -> int:
    settings = _cache_settings(args)
    stats = ArtifactStore(settings.dir).stats()
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(f"cache {stats['root']}: {stats['total_files']} artifacts, {_human(stats['total_bytes'])}")
    for extractor, entry in sorted(stats["extractors"].items()):
        print(f"  {extractor:<14} {entry['files']:>8} files  {_human(entry['bytes']):>10}")
    limits = f"ttl_hours={settings.ttl_hours or 'none'}, max_gb={settings.max_gb or 'none'}"
    print(f"limits: {limits}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    settings = _cache_settings(args)
    store = ArtifactStore(settings.dir)
    result = store.collect_garbage(ttl_hours=settings.ttl_hours, max_gb=settings.max_gb,
                                   grace_hours=settings.gc_grace_hours)
    print(f"cache {store.root}: removed {result['removed_files']} artifacts ({_human(result['removed_bytes'])})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = ArtifactStore(_cache_settings(args).dir)
    result = store.verify()
    print(f"cache {store.root}: {result['checked']} artifacts rehashed, {result['discarded']} damaged ones removed "
          "(they will be recomputed)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .report.status import format_status, run_status

    status = run_status(args.results_dir)
    print(format_status(status))
    return 1 if any(s.failed for s in status["stages"]) else 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from .outputs.dataset import dataset_manifests

    found = 0
    for manifest in dataset_manifests(Path(args.results_dir) / "dataset", paths=args.paths):
        print(json.dumps(manifest, ensure_ascii=False, sort_keys=True))
        found += 1
    return 0 if found == len(args.paths) or not args.paths else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiofeat", description="audiofeat tools (the workflow runs with "
                                     "snakemake; see README.md)")
    sub = parser.add_subparsers(dest="group", required=True)
    cache = sub.add_parser("cache", help="inspect and bound the artifact store")
    cache_sub = cache.add_subparsers(dest="command", required=True)
    for name, handler, text in (("stats", cmd_stats, "artifacts and bytes per extractor"),
                                ("gc", cmd_gc, "remove expired and least-recently-used artifacts"),
                                ("verify", cmd_verify, "rehash every artifact, remove damaged ones")):
        p = cache_sub.add_parser(name, help=text)
        p.add_argument("--config", help="workflow config to read cache.* from (default: config/config.yaml)")
        p.add_argument("--dir", help="store folder (overrides cache.dir and CACHE_DIR)")
        if name == "gc":
            p.add_argument("--ttl-hours", dest="ttl_hours", type=float, help="remove artifacts unused this long")
            p.add_argument("--max-gb", dest="max_gb", type=float, help="then shrink the store to this size")
            p.add_argument("--grace-hours", dest="gc_grace_hours", type=float,
                           help="never remove what was used this recently (default cache.gc_grace_hours: 1)")
        elif name == "stats":
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=handler)
    status = sub.add_parser("status", help="how far a running or finished run is, across shards")
    status.add_argument("results_dir", help="the run's results_dir")
    status.set_defaults(handler=cmd_status)
    manifest = sub.add_parser("manifest", help="inputs' manifests from a run's dataset, a JSON line each (all of "
                              "them, or those of the paths given): what outputs.manifests: files writes")
    manifest.add_argument("results_dir", help="the run's results_dir")
    manifest.add_argument("paths", nargs="*", help="inputs' paths, as the manifests' source.path gives them")
    manifest.set_defaults(handler=cmd_manifest)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
