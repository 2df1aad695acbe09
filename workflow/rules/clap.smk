rule clap_embed:
    input:
        table=rules.ingest_decode.output.table,
    output:
        table=results("clap/{shard}.jsonl"),
        profile=results("timings/clap/{shard}.json"),
    params:
        version=get_clap_version(),
    conda:
        "../../environment.yaml"
    log:
        results("logs/clap_embed/{shard}.log"),
    benchmark:
        results("benchmarks/clap_embed/{shard}.tsv")
    threads: get_shard_threads("clap")
    script:
        "../../scripts/clap.py"
