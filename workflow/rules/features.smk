rule features_extract:
    input:
        table=rules.ingest_decode.output.table,
    output:
        table=results("features/{shard}.jsonl"),
        profile=results("timings/features/{shard}.json"),
    params:
        version=get_features_version(),
    conda:
        "../../environment.yaml"
    log:
        results("logs/features_extract/{shard}.log"),
    benchmark:
        results("benchmarks/features_extract/{shard}.tsv")
    threads: get_shard_threads("features")
    script:
        "../../scripts/features.py"
