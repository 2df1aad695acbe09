# A shard's path groups (more paths share its contents than shard.target_files) are assembled by its one job,
# one after another: adding a path reruns one job, not one per group.
rule assemble_shard:
    input:
        unpack(get_shard_stage_tables),
        paths=get_shard_path_tables,
    output:
        summary=bookkeeping("assembled/{shard}.json"),
    conda:
        "../../environment.yaml"
    params:
        extractors=list(EXTRACTORS),
        # Per-file manifests and the shard's Parquet parts (dataset/<shard>-<k>.parquet) are not declared outputs:
        # Snakemake would delete them before the job, and only what changed is rewritten (the index says what).
        manifests_dir=results("manifests"),
        write_manifests=SETTINGS.outputs.manifests == "files",
        # The thresholds of the dataset's flags column: a change rebuilds the rows (not their artifacts).
        flags=SETTINGS.flags.to_dict(),
        dataset_dir=results("dataset"),
        # Each path group's index (<group>.index.json): what its rows and parts were made of.
        index_dir=lambda wildcards, output: os.path.dirname(output.summary),
        # Removed when the job fails for a fault (an artifact gone from the store), so that the same command reruns.
        run_summary=results("summary.json"),
    # Its path groups are assembled in parallel, one process a thread (a shard of one group: one).
    threads: lambda wildcards, input: min(THREADS, len(input.paths))
    resources:
        # Minutes a cluster may let it run: its path groups take about 0.27 s each here (2,048 in 9 min), allowed 1.5.
        runtime=lambda wildcards, input: 30 + len(input.paths) // 40,
    log:
        bookkeeping("logs/assemble_shard/{shard}.log"),
    benchmark:
        bookkeeping("benchmarks/assemble_shard/{shard}.tsv")
    group:
        SHARD_GPU if "clap" in EXTRACTORS else SHARD_CPU
    script:
        "../scripts/assemble.py"


rule finalize:
    input:
        unpack(get_shard_tables),
        summaries=get_shard_summaries,
        errors=rules.inventory.output.errors,
        profiles=get_shard_profiles,
    output:
        schema=results("manifest.schema.json"),
        summary=results("summary.json"),
        html=report(results("report/index.html"), category="Run report"),
        tsv=results("report/timings.tsv"),
    conda:
        "../../environment.yaml"
    params:
        extractors=list(EXTRACTORS),
        manifests_dir=results("manifests"),
        write_manifests=SETTINGS.outputs.manifests == "files",
        dataset_dir=results("dataset"),
        assembled_dir=bookkeeping("assembled"),
        # The extractors' matrices (embeddings.npy of CLAP, speaker_embeddings.npy): patched in place where parts
        # changed, so not declared outputs (Snakemake would delete them before the job); each with an index of
        # which part's rows it holds (the next finalize rewrites only the parts that changed).
        matrices=get_matrices(),
        # This run's store, read by the next run's advice (a results folder finished before with another store).
        run_state=bookkeeping("run_state.json"),
    log:
        bookkeeping("logs/finalize.log"),
    benchmark:
        bookkeeping("benchmarks/finalize.tsv")
    localrule: True
    script:
        "../scripts/finalize.py"


rule finalize_strict:
    input:
        summary=rules.finalize.output.summary,
    output:
        flag=bookkeeping("status/strict_ok"),
    conda:
        "../../environment.yaml"
    log:
        bookkeeping("logs/finalize_strict.log"),
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
