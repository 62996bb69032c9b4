# Training runs. Only the final model (and its summary and snapshots) are declared outputs: the resumable state
# lives in the undeclared <results>/<experiment>/runs/<run identity>/ (d2o.run_state), which Snakemake never deletes,
# so a job killed by a time limit or preemption continues where it stopped when it is resubmitted (retries in the
# SLURM profile), and a state is only ever resumed into the settings and inputs it was made with.


rule settings:
    """One part of an experiment's typed settings (d2o.settings). Its params are the part itself, so Snakemake's
    params trigger rewrites the file only when that part changes, and only the jobs reading it rerun; the training
    part also when what makes the run's input files changes (training_upstream, manual_source_state)."""
    output:
        f"{R}/{{experiment}}/settings/{{part}}.json",
    params:
        part=lambda wc: EXPERIMENTS[wc.experiment].part(wc.part),
        dataset_source=lambda wc: manual_source_state(EXPERIMENTS[wc.experiment].dataset) if wc.part == "training" else "",
        upstream=lambda wc: training_upstream(wc.experiment) if wc.part == "training" and wc.experiment in TRAIN else "",
    localrule: True
    log:
        f"{L}/settings/{{experiment}}-{{part}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/settings.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{R}/{{train_experiment}}/model.safetensors",
        summary=f"{R}/{{train_experiment}}/train.json",
        snapshots=directory(f"{R}/{{train_experiment}}/snapshots"),
    params:
        runs_dir=lambda wc: f"{R}/{wc.train_experiment}/runs",
        d_init=d_init_arg,
    threads: train_threads
    priority: callable_priority(train_priority)
    resources:
        gpu=train_gpus,
        runtime=train_runtime,
        mem_mb=lambda wc: exp(wc, "train_experiment").resources.mem_mb,
        cpus_per_gpu=lambda wc: exp(wc, "train_experiment").resources.cpus_per_gpu if train_gpus(wc) else -1,
        slurm_extra=slurm_signal,
    log:
        f"{L}/train/{{train_experiment}}.log",
    benchmark:
        f"{B}/train/{{train_experiment}}.tsv"
    conda:
        "../envs/gpu.yaml"
    shell:
        # train.py starts one process per GPU itself (torchrun): the GPU count is a resource, not a parameter, so a
        # change of resources.gpus reruns nothing (the registry's batch_gpu keeps the iteration the same)
        f"{PYTHON} {SCRIPTS}/train.py --gpus {{resources.gpu}} --threads {{threads}} --training {{input.training}} "
        "--execution {input.execution} --dataset {input.dataset} --init {input.init} {params.d_init} "
        "--runs-dir {params.runs_dir} --output {output.model} --snapshots {output.snapshots} "
        ">> {log} 2>&1"
