rule ingest_decode:
    input:
        shard=results("inventory/shards/{shard}.tsv"),
    output:
        table=results("ingest/{shard}.jsonl"),
        profile=results("timings/ingest/{shard}.json"),
    params:
        identity=DECODER.rule_identity(),
        # How far the job is, for `audiofeat status` (the log says it too, every few seconds).
        progress=lambda wildcards: results(f"progress/ingest/{wildcards.shard}.json"),
    conda:
        "../../environment.yaml"
    log:
        results("logs/ingest_decode/{shard}.log"),
    benchmark:
        results("benchmarks/ingest_decode/{shard}.tsv")
    threads: get_shard_threads(DECODER)
    script:
        "../scripts/ingest.py"
