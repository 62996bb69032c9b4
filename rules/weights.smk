# Other weights the runs read (registry `weights`): downloaded and verified on the submit host like the checkpoints,
# converted once into the project's format; jobs read the converted file.


rule download_weight:
    output:
        f"{S}/downloads/weights/{{weight}}",
    params:
        url=lambda wc: config["weights"][wc.weight]["url"],
        sha256=lambda wc: config["weights"][wc.weight]["sha256"],
        key=lambda wc: f"weights:{wc.weight}",
        lock=config["checkpoint_lock"],
        content=lambda wc: config["weights"][wc.weight]["kind"],
    localrule: True
    retries: 0  # download.py retries each transfer itself
    log:
        f"{L}/download_weight/{{weight}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/download.py"


rule convert_weight:
    input:
        ancient(f"{S}/downloads/weights/{{weight}}"),
    output:
        f"{S}/weights/{{weight}}.safetensors",
    params:
        kind=lambda wc: config["weights"][wc.weight]["kind"],
    localrule: True
    log:
        f"{L}/convert_weight/{{weight}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/convert_weight.py"
