# One rule per chosen extractor, all alike: a shard's decoded files in, the extractor's shard table out.
# Adding an extractor adds a rule here by itself (the registry in audiofeat/extractors/__init__.py).
for _name, _extractor in EXTRACTORS.items():

    rule:
        name:
            f"extract_{_name}"
        input:
            table=rules.decode.output.table,
            # Where an extractor that measures the input file itself (loudness) finds it: path and stat.
            rows=bookkeeping("inventory/shards/{shard}.tsv"),
        output:
            table=bookkeeping(f"{_name}/{{shard}}.jsonl"),
            profile=bookkeeping(f"timings/{_name}/{{shard}}.json"),
        params:
            extractor=_name,
            # A change of the extractor's version or parameters reruns its jobs (the store still decides
            # what is computed).
            identity=_extractor.rule_identity(),
            # The shard's last table, kept where Snakemake does not delete it before the job: cached files
            # whose artifact it names take their block from it instead of reopening the artifact.
            previous=lambda wildcards, name=_name: bookkeeping(f"previous/{name}/{wildcards.shard}.jsonl"),
            # How far the job is, for `audiofeat status` (the log says it too, every few seconds).
            progress=lambda wildcards, name=_name: bookkeeping(f"progress/{name}/{wildcards.shard}.json"),
            # Removed with the shard's decode table when a WAV is gone from the store: the same command redoes both.
            run_summary=results("summary.json"),
            # The GPUs a local run shares out: the job claims one of them for itself (audiofeat/devices.py).
            gpus=",".join(GPUS) if _name == "clap" else "",
        resources:
            gpu=1 if _name == "clap" and GPUS else 0,
        conda:
            "../../environment.yaml"
        log:
            bookkeeping(f"logs/extract_{_name}/{{shard}}.log"),
        benchmark:
            bookkeeping(f"benchmarks/extract_{_name}/{{shard}}.tsv")
        threads: get_shard_threads(_extractor)
        group:
            SHARD_GPU if _name == "clap" else SHARD_CPU
        script:
            "../scripts/extract.py"
