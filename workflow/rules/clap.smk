rule clap_embed:
    input:
        table=rules.ingest_decode.output.table,
    output:
        table=results("clap/{shard}.jsonl"),
        profile=results("timings/clap/{shard}.json"),
    params:
        version=get_clap_version(),
        # The shard's last table, kept where Snakemake does not delete it before the job: cached files whose
        # artifact it names take their block from it instead of reopening their .npz.
        previous=lambda wildcards: results(f"previous/clap/{wildcards.shard}.jsonl"),
    conda:
        "../../environment.yaml"
    log:
        results("logs/clap_embed/{shard}.log"),
    benchmark:
        results("benchmarks/clap_embed/{shard}.tsv")
    threads: get_shard_threads("clap")
    script:
        "../../scripts/clap.py"
