# Generation: EDM's per-seed noise (seeds 0..N-1 shared by EDM, D2O and D2O-F), sharded across jobs, each shard
# written atomically (a rerun redoes only missing shards), merged into an EDM-format zip of PNGs. {best} is "" for an
# experiment's final model and "best/" for its lowest-FID snapshot (rule best_snapshot), evaluated the same way.


rule sample_shard:
    input:
        unpack(sample_inputs),
    output:
        f"{R}/{{experiment}}/{{best}}samples/shard-{{shard}}.npz",
    resources:
        gpu=job_gpus,
        runtime=lambda wc: 120 if exp(wc).kind == "edm_sampler" else 30,
    threads: job_threads
    log:
        f"{L}/sample/{{experiment}}-{{best}}{{shard}}.log",
    benchmark:
        f"{B}/sample/{{experiment}}-{{best}}{{shard}}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/sample_shard.py"


rule merge_samples:
    input:
        lambda wc: [f"{R}/{wc.experiment}/{wc.best}samples/shard-{k}.npz" for k in range(exp(wc).sampling.shards)],
    output:
        f"{R}/{{experiment}}/{{best}}samples.zip",
    log:
        f"{L}/merge_samples/{{experiment}}-{{best}}samples.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/merge_samples.py"


rule best_snapshot:
    """The lowest-FID snapshot of a run (its snapshot FIDs, fid-curve.json): the checkpoint the authors released and
    reported (their README). Its model is evaluated like the final one, under <experiment>/best/."""
    input:
        curve=f"{R}/{{experiment}}/fid-curve.json",
        snapshots=f"{R}/{{experiment}}/snapshots",
    output:
        model=f"{R}/{{experiment}}/best/model.safetensors",
        choice=f"{R}/{{experiment}}/best/snapshot.json",
    log:
        f"{L}/best_snapshot/{{experiment}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/best_snapshot.py"
