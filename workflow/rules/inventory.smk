checkpoint inventory:
    output:
        files=results("inventory/files.tsv"),
        shards=directory(results("inventory/shards")),
        paths=directory(results("inventory/paths")),
        errors=results("inventory/errors.tsv"),
    params:
        input_state=get_inventory_state,
        shard=config["shard"],
    conda:
        "../../environment.yaml"
    log:
        results("logs/inventory.log"),
    benchmark:
        results("benchmarks/inventory.tsv")
    threads: THREADS
    localrule: True
    script:
        "../scripts/inventory.py"
