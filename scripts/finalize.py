import os
import sys

from _job import start  # scripts/ is on sys.path: Snakemake adds each script's folder

log = start(snakemake)  # noqa: F821 - injected by Snakemake
from audiofeat.stages import run_finalize, summary_line  # noqa: E402

out = snakemake.output  # noqa: F821
summary = run_finalize(snakemake.input.files, snakemake.input.ingest, snakemake.input.features,  # noqa: F821
                       snakemake.input.clap, manifests_dir=out.manifests, manifest_jsonl=out.jsonl,  # noqa: F821
                       embeddings_npy=out.embeddings, summary_json=out.summary,
                       config=snakemake.config)  # noqa: F821
log.info("%s", summary_line(summary))
for path in summary["failed_files"]:
    log.info("failed: %s", path)
