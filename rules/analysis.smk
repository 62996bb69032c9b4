# Frequency analysis (paper §4.5, Fig 4, Fig 6, App E) and same-seed sample grids (Fig 5, Figs 7-21).


rule frequency_analysis:
    input:
        model=lambda wc: checkpoint_model(config["frequency"]["checkpoint"]),
    output:
        f"{R}/analysis/frequency.npz",
    params:
        spec=config["frequency"],
        label=config["label"],
    resources:
        gpu=lambda wc: 0 if config["offline"] else 1,
        runtime=60,
    log:
        f"{L}/frequency_analysis.log",
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/frequency_analysis.py"


rule sample_grid:
    input:
        unpack(sample_inputs),
    output:
        f"{R}/grids/{{experiment}}.npz",
        f"{R}/grids/{{experiment}}.png",
    params:
        num=64,
        label=config["label"],
    resources:
        gpu=job_gpus,
        runtime=30,
    log:
        f"{L}/sample_grid/{{experiment}}.log",
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/sample_grid.py"
