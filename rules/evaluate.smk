# Metrics through torch-fidelity (d2o.metrics): FID vs EDM's published statistics (`fid`) and vs statistics of the
# prepared dataset (`fid_dataset`), IS, precision/recall, CLIP-FID; FID of every training snapshot; FID between
# two generated sets (Fig 2). Dataset features are computed once per dataset (rule dataset_stats) and reused.


rule metric:
    input:
        unpack(metric_inputs),
    output:
        f"{R}/{{experiment}}/{{best}}metrics/{{metric}}.json",
    params:
        ref_check=metric_ref_check,
    resources:
        gpu=job_gpus,
        runtime=120,
    threads: job_threads
    log:
        f"{L}/metric/{{experiment}}-{{best}}{{metric}}.log",
    benchmark:
        f"{B}/metric/{{experiment}}-{{best}}{{metric}}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/metric.py"


rule snapshot_fid:
    input:
        snapshots=f"{R}/{{experiment}}/snapshots",
        ref=lambda wc: ref_stats(exp(wc).dataset),
        sampling=lambda wc: settings_file(wc.experiment, "sampling"),
        evaluation=lambda wc: settings_file(wc.experiment, "evaluation"),
        weights=metric_weight_files("fid"),
    output:
        f"{R}/{{experiment}}/snapshot-metrics/fid-{{kimg}}.json",
    resources:
        gpu=job_gpus,
        runtime=30,
    threads: job_threads
    log:
        f"{L}/snapshot_fid/{{experiment}}-{{kimg}}.log",
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/snapshot_fid.py"


rule fid_curve:
    input:
        snapshot_metric_files,
    output:
        f"{R}/{{experiment}}/fid-curve.json",
    log:
        f"{L}/fid_curve/{{experiment}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/fid_curve.py"


rule pair_fid:
    input:
        samples=f"{R}/{{experiment}}/samples.zip",
        other=f"{R}/{{other}}/samples.zip",
        evaluation=lambda wc: settings_file(wc.experiment, "evaluation"),
        weights=metric_weight_files("fid"),
    output:
        f"{R}/{{experiment}}/metrics/fid-vs-{{other}}.json",
    wildcard_constraints:
        other=_alt(EXPERIMENTS),
    resources:
        gpu=job_gpus,
        runtime=60,
    log:
        f"{L}/pair_fid/{{experiment}}-{{other}}.log",
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/pair_fid.py"



rule train_demo_cnn:
    """DEMO ONLY: a small CNN trained on fresh procedural shapes (registry demo_cnns; d2o.demo_cnn): the demo's metric
    extractor or its discriminator's backbone; its shape accuracy on the demo dataset is written beside it."""
    input:
        lambda wc: dataset_zip(config["demo_cnns"][wc.demo_cnn]["dataset"]),
    output:
        model=weight_file("{demo_cnn}"),
        summary=f"{S}/weights/{{demo_cnn}}.json",
    params:
        spec=lambda wc: config["demo_cnns"][wc.demo_cnn],
        shapes=lambda wc: shapes_options(config["datasets"][config["demo_cnns"][wc.demo_cnn]["dataset"]]["source"]),
    threads: 1  # bitwise reproducible (MKL's multi-threaded GEMM balances its work by the machine's load)
    priority: callable_priority(demo_cnn_priority)
    log:
        f"{L}/train_demo_cnn/{{demo_cnn}}.log",
    benchmark:
        f"{B}/train_demo_cnn/{{demo_cnn}}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/train_demo_cnn.py"
