# Inference: a job loads the model once and runs every cell it owns (dense + methods x
# compression ratios x tasks) for one length, or rather the part of them the inference cache
# (sparse_frontier.cache) lacks: a change under `methods:` reruns every job, cheaply, since each
# computes only the new or changed cells and loads no model when it has nothing to compute.
# Where one job would outrun the cluster's time limit, the (model, length) work is split into
# shards (workflow/rules/resources.smk); on one machine, and for the default config, one shard.


include: "resources.smk"


if is_dry_run(sys.argv):
    print_inference_plan()


rule inference:
    input:
        data=inference_data,
        model=inference_model_input,
    output:
        "results/predictions/{model}/{length}/shard{shard}.parquet",
    log:
        "results/logs/inference/{model}/{length}/shard{shard}.log",
    benchmark:
        "results/benchmarks/inference/{model}/{length}/shard{shard}.tsv"
    conda:
        "../../envs/inference.yaml"
    # Every core of the run (inference_threads): Snakemake sets OMP_NUM_THREADS to the rule's
    # threads (1 if undeclared), which would leave a CPU run's matmuls on one core.
    threads: inference_threads
    resources:
        gpu=inference_gpus,
        mem_mb=inference_mem_mb,
        runtime=inference_runtime,
    params:
        path=model_path_param,
        rope_scaling=model_rope_scaling,
        engine=config["engine"],
        methods=config["methods"],
        # Only settings that change outputs: batch size and cache folder rerun nothing.
        dtype=config["inference"]["dtype"],
        max_new_tokens=config["inference"]["max_new_tokens"],
        n_shards=inference_shard_count,
    script:
        "../scripts/inference.py"
