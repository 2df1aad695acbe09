rule decode:
    input:
        shard=bookkeeping("inventory/shards/{shard}.tsv"),
    output:
        table=bookkeeping("decode/{shard}.jsonl"),
        profile=bookkeeping("timings/decode/{shard}.json"),
    params:
        identity=DECODER.rule_identity(),
        # Not part of the WAV's key (a limit changes no sample): a new limit reruns the jobs, which find the WAVs.
        max_hours=DECODER.max_hours,
        # How far the job is, for `audiofeat status` (the log says it too, every few seconds).
        progress=lambda wildcards: bookkeeping(f"progress/decode/{wildcards.shard}.json"),
    conda:
        "../../environment.yaml"
    log:
        bookkeeping("logs/decode/{shard}.log"),
    benchmark:
        bookkeeping("benchmarks/decode/{shard}.tsv")
    threads: get_shard_threads(DECODER)
    group:
        SHARD_CPU
    script:
        "../scripts/decode.py"
