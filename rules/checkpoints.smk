# Checkpoints: verified download (submit host), then one conversion into the project's safetensors format (an EDM
# generator, or the Table 1 row's StyleGAN2-ADA discriminator); or, in the offline demo, a tiny EDM pre-trained with
# EDM's loss. Downstream rules read only the converted file.


rule download_checkpoint:
    output:
        f"{S}/checkpoints/{{download_ckpt}}.pkl",
    params:
        url=lambda wc: config["checkpoints"][wc.download_ckpt]["url"],
        sha256=lambda wc: config["checkpoints"][wc.download_ckpt].get("sha256", ""),
        key=lambda wc: f"checkpoint:{wc.download_ckpt}",
        lock=config["checkpoint_lock"],
        content="pickle",
    localrule: True
    retries: 0  # download.py retries each transfer itself
    log:
        f"{L}/download_checkpoint/{{download_ckpt}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/download.py"


rule convert_checkpoint:
    input:
        ancient(f"{S}/checkpoints/{{download_ckpt}}.pkl"),
    output:
        f"{R}/checkpoints/{{download_ckpt}}.safetensors",
    params:
        kind=lambda wc: config["checkpoints"][wc.download_ckpt]["kind"],
        architecture=lambda wc: config["checkpoints"][wc.download_ckpt].get("architecture"),
        sha256=lambda wc: config["checkpoints"][wc.download_ckpt].get("sha256", ""),
        key=lambda wc: f"checkpoint:{wc.download_ckpt}",
        lock=config["checkpoint_lock"],
    localrule: True
    log:
        f"{L}/convert_checkpoint/{{download_ckpt}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/convert_checkpoint.py"


rule pretrain_edm:
    input:
        ancient(lambda wc: dataset_zip(config["checkpoints"][wc.pretrain_ckpt]["dataset"])),
    output:
        f"{R}/checkpoints/{{pretrain_ckpt}}.safetensors",
    params:
        spec=lambda wc: config["checkpoints"][wc.pretrain_ckpt]["pretrain"],
        label=config["label"],
    threads: lambda wc: config["checkpoints"][wc.pretrain_ckpt]["pretrain"]["threads"]
    priority: 10  # the demo's longest job, which every training waits for: started before the demo CNNs
    resources:
        runtime=60,
    log:
        f"{L}/pretrain_edm/{{pretrain_ckpt}}.log",
    benchmark:
        f"{B}/pretrain_edm/{{pretrain_ckpt}}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/pretrain_edm.py"


rule checkpoint_header:
    """A checkpoint's class and kwargs without its weights, for random-init runs: built from the registry's
    pre-training spec (no need to wait for the pre-training), or read from the converted checkpoint."""
    input:
        lambda wc: [] if "pretrain" in config["checkpoints"][wc.ckpt] else ancient(checkpoint_model(wc.ckpt)),
    output:
        f"{R}/checkpoints/{{ckpt}}.header.safetensors",
    params:  # the network only: a change of the pre-training's other keys does not touch the random-init runs
        network=lambda wc: config["checkpoints"][wc.ckpt].get("pretrain", {}).get("network"),
    localrule: True
    log:
        f"{L}/checkpoint_header/{{ckpt}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/checkpoint_header.py"
