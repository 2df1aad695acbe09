rule finalize:
    input:
        unpack(get_shard_tables),
        files=rules.inventory.output.files,
        profiles=get_shard_profiles,
    output:
        # The embedding matrix, when CLAP runs.
        **({"embeddings": results("embeddings.npy")} if "clap" in EXTRACTORS else {}),
        jsonl=results("manifest.jsonl"),
        schema=results("manifest.schema.json"),
        summary=results("summary.json"),
        html=report(results("report/index.html"), category="Run report"),
        tsv=results("report/timings.tsv"),
    conda:
        "../../environment.yaml"
    params:
        extractors=list(EXTRACTORS),
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
        "../scripts/finalize.py"


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
        "../scripts/strict.py"


onsuccess:
    print_summary()
    _speedups.cancel_wakeup_timers()
    _speedups.spare_exit_collection()


onerror:
    print_summary()
    _speedups.cancel_wakeup_timers()
    _speedups.spare_exit_collection()
