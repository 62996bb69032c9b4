# External weights (registry `weights`, d2o.weights): every pretrained network a job reads, the feature extractors of
# the metrics and the class embedding. Downloaded and verified on the submit host like the checkpoints (a file copied
# into resources/downloads/weights/ is used as it is, once its hash checks), converted once into safetensors without
# running code from it; jobs read only the converted file, a declared input.


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
        weight_file("{weight}"),
    params:
        kind=lambda wc: config["weights"][wc.weight]["kind"],
        sha256=lambda wc: config["weights"][wc.weight]["sha256"],
        key=lambda wc: f"weights:{wc.weight}",
        lock=config["checkpoint_lock"],
    localrule: True
    log:
        f"{L}/convert_weight/{{weight}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/convert_weight.py"
