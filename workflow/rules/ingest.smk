rule ingest_decode:
    input:
        shard=results("inventory/shards/{shard}.tsv"),
    output:
        table=results("ingest/{shard}.jsonl"),
        profile=results("timings/ingest/{shard}.json"),
    params:
        identity=DECODER.rule_identity(),
    conda:
        "../../environment.yaml"
    log:
        results("logs/ingest_decode/{shard}.log"),
    benchmark:
        results("benchmarks/ingest_decode/{shard}.tsv")
    threads: get_shard_threads(DECODER)
    script:
        "../scripts/ingest.py"
