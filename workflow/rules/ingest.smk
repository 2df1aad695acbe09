rule ingest_decode:
    input:
        shard=results("inventory/shards/{shard}.tsv"),
    output:
        table=results("ingest/{shard}.jsonl"),
        profile=results("timings/ingest/{shard}.json"),
    params:
        version=get_ingest_version(),
    conda:
        "../../environment.yaml"
    log:
        results("logs/ingest_decode/{shard}.log"),
    benchmark:
        results("benchmarks/ingest_decode/{shard}.tsv")
    threads: get_shard_threads("ingest")
    script:
        "../../scripts/ingest.py"
