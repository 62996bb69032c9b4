# Generation: EDM's per-seed noise (seeds 0..N-1 shared by EDM, D2O and D2O-F), sharded across jobs, each shard
# written atomically (a rerun redoes only missing shards), merged into an EDM-format zip of PNGs.


rule sample_shard:
    input:
        unpack(sample_inputs),
    output:
        f"{R}/{{experiment}}/samples/shard-{{shard}}.npz",
    resources:
        gpu=job_gpus,
        runtime=lambda wc: 120 if exp(wc).kind == "edm_sampler" else 30,
    threads: job_threads
    log:
        f"{L}/sample/{{experiment}}-{{shard}}.log",
    benchmark:
        f"{B}/sample/{{experiment}}-{{shard}}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/sample_shard.py"


rule merge_samples:
    input:
        lambda wc: [f"{R}/{wc.experiment}/samples/shard-{k}.npz" for k in range(exp(wc).sampling.shards)],
    output:
        f"{R}/{{experiment}}/samples.zip",
    log:
        f"{L}/merge_samples/{{experiment}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/merge_samples.py"
