from _job import finish, start  # workflow/scripts/ is on sys.path: Snakemake adds each script's folder

job = snakemake  # noqa: F821 - injected by Snakemake
log, settings = start(job)
from pathlib import Path  # noqa: E402

from audiofeat.extractors import build_extractors  # noqa: E402
from audiofeat.faults import Fault  # noqa: E402
from audiofeat.outputs.shard import assemble_shard  # noqa: E402

extractors = build_extractors(settings)
try:
    groups = {Path(path).name[: -len(".tsv")]: path for path in job.input.paths}
    summary = assemble_shard(groups, {stage: job.input[stage] for stage in ("decode", *extractors)}, extractors,
                             shard=job.wildcards.shard, manifests_dir=job.params.manifests_dir,
                             dataset_dir=job.params.dataset_dir, summary_path=job.output.summary,
                             index_dir=job.params.index_dir, write_manifests=job.params.write_manifests,
                             flags=settings.flags, workers=job.threads)
except Fault:
    # Snakemake reruns nothing below an up-to-date summary: without it, the same command redoes what is gone.
    Path(job.params.run_summary).unlink(missing_ok=True)
    raise
log.info("%d inputs in %d path groups: %d ok, %d failed; %d manifests written; %d parts", summary["rows"],
         len(groups), summary["ok"], summary["failed"], summary["manifests_written"], len(summary["parts"]))
finish()
