rule finalize:
    input:
        files=rules.inventory.output.files,
        ingest=get_shard_outputs("ingest"),
        features=get_shard_outputs("features"),
        clap=get_shard_outputs("clap"),
        profiles=get_shard_profiles,
    output:
        jsonl=results("manifest.jsonl"),
        embeddings=results("embeddings.npy"),
        summary=results("summary.json"),
        html=report(results("report/index.html"), category="Run report"),
        tsv=results("report/timings.tsv"),
    conda:
        "../../environment.yaml"
    params:
        # Per-file manifests mirror manifest.jsonl; they are not a declared output, so that Snakemake does not
        # delete them before the job and only changed ones are rewritten.
        manifests_dir=results("manifests"),
        # This run's store, read by the next run's advice (a results folder finished before with another store).
        run_state=results("run_state.json"),
    log:
        results("logs/finalize.log"),
    benchmark:
        results("benchmarks/finalize.tsv")
    localrule: True
    script:
        "../../scripts/finalize.py"


rule finalize_strict:
    input:
        summary=rules.finalize.output.summary,
    output:
        flag=results("status/strict_ok"),
    conda:
        "../../environment.yaml"
    log:
        results("logs/finalize_strict.log"),
    localrule: True
    script:
        "../../scripts/strict.py"


onsuccess:
    print_summary()
    cancel_wakeup_timers()
    spare_exit_collection()


onerror:
    print_summary()
    cancel_wakeup_timers()
    spare_exit_collection()
