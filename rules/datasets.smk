# Datasets in EDM's format (spec §12). Downloads run on the submit host (compute nodes often have no internet).


rule download_dataset_source:
    output:
        f"{S}/downloads/{{dataset}}/{{archive}}",
    params:
        url=dataset_download_url,
        sha256=lambda wc: config["datasets"][wc.dataset]["source"].get("sha256", ""),
        key=lambda wc: f"dataset:{wc.dataset}",
        lock=config["checkpoint_lock"],
        content="tar",
    localrule: True
    retries: 0  # download.py retries each transfer itself
    log:
        f"{L}/download_dataset_source/{{dataset}}/{{archive}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/download.py"


rule prepare_dataset:
    input:
        dataset_source,
    output:
        f"{S}/datasets/{{dataset}}.zip",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
        name=lambda wc: wc.dataset,
        # a manual source's fingerprint: a completed (or changed) download rebuilds the zip
        source_state=lambda wc: manual_source_state(wc.dataset),
    priority: 10  # the first job of every training chain (Snakemake passes no priority down to a job's inputs)
    localrule: True
    log:
        f"{L}/prepare_dataset/{{dataset}}.log",
    benchmark:
        f"{B}/prepare_dataset/{{dataset}}.tsv"
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/prepare_dataset.py"


rule download_reference:
    output:
        f"{S}/{{refkind}}/{{dataset}}.npz",
    wildcard_constraints:
        refkind="fid-refs|pr-refs",
    params:
        url=lambda wc: ref_download(wc, wc.refkind)["url"],
        sha256=lambda wc: ref_download(wc, wc.refkind).get("sha256", ""),
        key=lambda wc: f"{wc.refkind}:{wc.dataset}",
        lock=config["checkpoint_lock"],
        content="npz",
    localrule: True
    retries: 0  # download.py retries each transfer itself
    log:
        f"{L}/download_reference/{{refkind}}-{{dataset}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/download.py"


rule dataset_stats:
    input:
        dataset=ancient(f"{S}/datasets/{{dataset}}.zip"),
        weights=lambda wc: metric_weight_files("clip_fid" if wc.clip else "fid"),
    output:
        f"{R}/refs/{{dataset}}-{{extractor}}{{clip}}.npz",
    wildcard_constraints:
        extractor="inception|demo-trained|demo",
        clip="|-clip",
    params:
        features=to_dict(FEATURES),
    resources:
        gpu=lambda wc: 0 if config["offline"] else 1,
        runtime=60,
    log:
        f"{L}/dataset_stats/{{dataset}}-{{extractor}}{{clip}}.log",
    benchmark:
        f"{B}/dataset_stats/{{dataset}}-{{extractor}}{{clip}}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/dataset_stats.py"
