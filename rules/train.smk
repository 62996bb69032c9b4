# Training runs. Only the final model (and its summary and snapshots) are declared outputs: the resumable state
# lives in the undeclared run directory <results>/<experiment>/run, which Snakemake never deletes, so a job killed
# by a time limit or preemption continues where it stopped when it is resubmitted (retries in the SLURM profile).


rule experiment_config:
    output:
        f"{R}/{{experiment}}/config.json",
    params:
        resolved=lambda wc: EXPERIMENTS[wc.experiment],
    localrule: True
    log:
        f"{L}/experiment_config/{{experiment}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/experiment_config.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{R}/{{train_experiment}}/model.safetensors",
        summary=f"{R}/{{train_experiment}}/train.json",
        snapshots=directory(f"{R}/{{train_experiment}}/snapshots"),
    params:
        run_dir=lambda wc: f"{R}/{wc.train_experiment}/run",
        launcher=launcher,
        script=f"{SCRIPTS}/train.py",
        omp=train_omp_threads,
        d_init=d_init_arg,
    threads: train_threads
    resources:
        gpu=train_gpus,
        runtime=train_runtime,
        mem_mb=lambda wc: exp(wc, "train_experiment")["resources"]["mem_mb"],
        cpus_per_gpu=lambda wc: exp(wc, "train_experiment")["resources"]["cpus_per_gpu"] if train_gpus(wc) else -1,
        slurm_extra=slurm_signal,
    log:
        f"{L}/train/{{train_experiment}}.log",
    benchmark:
        f"{B}/train/{{train_experiment}}.tsv"
    conda:
        "../envs/gpu.yaml"
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launcher} {params.script} --config {input.config} "
        "--dataset {input.dataset} --init {input.init} {params.d_init} --run-dir {params.run_dir} --output {output.model} "
        "--snapshots {output.snapshots} >> {log} 2>&1"
