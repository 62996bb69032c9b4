# All Python of the workflow: registry validation, result paths, input functions, resources.
import functools
import math
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.rules import Rule as SnakemakeRule

from d2o.config import ConfigError, checkpoint_architectures, experiment_settings, metric_features, target_error, validate
from d2o.datasets import shapes_options, source_state
from d2o.literature import DEFAULT_PATH as LITERATURE_PATH
from d2o.tables import table10_columns
from d2o.settings import PARTS, to_dict
from d2o.weights import HUB_OFF, metric_weights, training_weights

try:
    validate(config, "config (" + ", ".join(map(str, workflow.configfiles or ["config/config.yaml"])) + ")")
except ConfigError as e:
    raise WorkflowError(str(e))


R = config["paths"]["results"]
S = config["paths"]["resources"]
L = config["paths"]["logs"]
B = config["paths"]["benchmarks"]
EXPERIMENTS = {name: experiment_settings(config, name) for name in config["experiments"]}  # d2o.settings.Experiment
TRAIN = [n for n, e in EXPERIMENTS.items() if e.kind == "train"]
ARCHITECTURES = checkpoint_architectures(config)  # checkpoint -> generator architecture (Table 10)
FEATURES = metric_features(config)  # the registry's metric feature extractors (d2o.settings.MetricFeatures)
DOWNLOAD_CKPTS = [n for n, c in config["checkpoints"].items() if "url" in c]
PRETRAIN_CKPTS = [n for n, c in config["checkpoints"].items() if "pretrain" in c]
METRIC_EXTRACTOR = config["metrics"]["extractor"]
SCRIPTS = os.path.join(workflow.basedir, "workflow", "scripts")  # absolute: the DAG may run in another --directory
LITERATURE = str(LITERATURE_PATH)  # the package's literature data

# Jobs never fetch weights from a hub: every pretrained network a job reads is a registry weight given to it as a file
# (rules/weights.smk, d2o.weights); a network asked for hub weights fails at once naming the registry key to add.
# The libraries' own switches back that up (a run started from this Snakefile, here or on a compute node).
os.environ.update({HUB_OFF: "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TORCH_HOME": os.path.abspath(os.path.join(S, ".no-hub", "torch"))})


def _alt(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    experiment=_alt(EXPERIMENTS),
    train_experiment=_alt(TRAIN),
    dataset=_alt(config["datasets"]),
    ckpt=_alt(config["checkpoints"]),
    weight=_alt(config.get("weights", {})),
    demo_cnn=_alt(config.get("demo_cnns", {})),
    download_ckpt=_alt(DOWNLOAD_CKPTS),
    pretrain_ckpt=_alt(PRETRAIN_CKPTS),
    metric="fid|fid_dataset|is|pr|clip_fid",
    part="|".join(PARTS),
    best="|best/",
    table="|".join(config["tables"]) or "(?!x)x",
    figure="|".join(config["figures"]) or "(?!x)x",
    kimg=r"\d+",
    shard=r"\d+",


def exp(wildcards, key="experiment"):
    return EXPERIMENTS[getattr(wildcards, key)]


# ------------------------------------------------------------------------------------------------ paths


def dataset_zip(dataset):
    return f"{S}/datasets/{dataset}.zip"


def checkpoint_model(ckpt):
    return f"{R}/checkpoints/{ckpt}.safetensors"


def checkpoint_header_file(ckpt):
    """The checkpoint's network without weights, written by the checkpoint_header rule, for random-init runs."""
    return f"{R}/checkpoints/{ckpt}.header.safetensors"


def weight_file(name):
    """A registry weight converted for the jobs (rules/weights.smk; d2o.weights)."""
    return f"{S}/weights/{name}.safetensors"


def metric_weight_files(metric):
    """The feature extractor file a metric job reads: the registry's Inception or CLIP weights (d2o.weights), the
    demo's trained CNN (demo_cnns, rule train_demo_cnn), or none (the demo's random CNN)."""
    if METRIC_EXTRACTOR == "demo-trained":
        return [weight_file(FEATURES.demo_extractor)]
    return [weight_file(n) for n in metric_weights("fid" if metric == "fid_dataset" else metric, FEATURES)]


def settings_file(name, part):
    """One part of an experiment's typed settings, written by the `settings` rule: the file the jobs that read it depend on, so a
    change reruns exactly them (training -> train; sampling -> samples; evaluation -> metrics; execution, resources
    and descriptions -> nothing)."""
    return f"{R}/{name}/settings/{part}.json"


def experiment_model(name):
    """The network a sample set comes from: the trained generator, or the EDM checkpoint of a sampler baseline."""
    e = EXPERIMENTS[name]
    if e.kind == "train":
        return f"{R}/{name}/model.safetensors"
    return checkpoint_model(e.sampling.heun.checkpoint)


def ref_stats(dataset, clip=False):
    """Feature statistics of a prepared dataset, computed once and reused by every model (rule dataset_stats)."""
    return f"{R}/refs/{dataset}-{METRIC_EXTRACTOR}{'-clip' if clip else ''}.npz"


def metric_files(name):
    """What a table or the scorecard reads of one experiment: its metrics, and for a run with snapshot metrics the
    same metrics of its lowest-FID snapshot (best/), the snapshot it is and the FID curve."""
    e = EXPERIMENTS[name]
    files = [f"{R}/{name}/metrics/{m}.json" for m in e.evaluation.metrics]
    files += [f"{R}/{name}/metrics/fid-vs-{o}.json" for o in e.evaluation.compare_with]
    if e.kind == "train":
        files.append(f"{R}/{name}/train.json")
        if e.evaluation.snapshot_metrics:
            files.append(f"{R}/{name}/fid-curve.json")
            files.append(f"{R}/{name}/best/snapshot.json")
            files += [f"{R}/{name}/best/metrics/{m}.json" for m in e.evaluation.metrics]
    return files


# ------------------------------------------------------------------------------------------------ input functions


def dataset_source(wildcards):
    src = config["datasets"][wildcards.dataset]["source"]
    if src["kind"] == "download":
        return [f"{S}/downloads/{wildcards.dataset}/{src['archive']}"]
    return []


@functools.lru_cache(maxsize=None)
def manual_source_state(dataset):
    """The fingerprint of a manual dataset source ("" for downloads, pinned by their SHA-256, and procedural ones): a
    param of the dataset's preparation and of its runs' training settings, so a completed download rebuilds the zip and
    retrains the runs that read it."""
    src = config["datasets"][dataset]["source"]
    return source_state(src["path"]) if src["kind"] == "manual" else ""


def _made_by(spec):
    """A registry entry as it makes a file: its text left out."""
    return {k: v for k, v in spec.items() if k != "description"}


def training_upstream(name):
    """What makes a training's dataset, checkpoints and weights (their registry entries, text left out): a param of its
    training settings. The train job reads those files as they are (`ancient`), so without it an edit of the tiny EDM's
    pre-training, of a dataset or of a demo CNN would leave the runs made from the old files in place. A random-init
    run depends on its checkpoint's network only; a downloaded file on the url and sha256 that pin it."""
    t = EXPERIMENTS[name].training

    def dataset(n):
        return _made_by(config["datasets"][n])

    def checkpoint(n, network_only=False):
        spec = config["checkpoints"][n]
        if "pretrain" not in spec:
            return _made_by(spec)
        return spec["pretrain"]["network"] if network_only else {**_made_by(spec), "dataset": dataset(spec["dataset"])}

    def weight(n):
        if n in config["weights"]:
            return _made_by(config["weights"][n])
        return {**config["demo_cnns"][n], "dataset": dataset(config["demo_cnns"][n]["dataset"])}

    upstream = {"dataset": dataset(t.dataset), "init": checkpoint(t.init, network_only=t.fresh_init),
                "weights": {n: weight(n) for n in training_weights(t)}}
    if t.discriminator is not None and t.discriminator.init:
        upstream["discriminator_init"] = checkpoint(t.discriminator.init)
    return upstream


def dataset_download_url(wildcards):
    src = config["datasets"][wildcards.dataset]["source"]
    if src["kind"] != "download":
        raise WorkflowError(f"datasets.{wildcards.dataset}: source kind is '{src['kind']}', not a download")
    return src["url"]


def train_inputs(wildcards):
    """The training settings (a change retrains), and, read as they are (`ancient`: their content is hashed into the
    run identity by the trainer, and an edit of what makes them reruns the settings through their `upstream` param,
    training_upstream), the execution settings, the dataset and the checkpoints: a random-init run reads
    only its checkpoint's network header (it neither waits for nor reruns with the weights), unless it distils them."""
    name = wildcards.train_experiment
    t = EXPERIMENTS[name].training
    init = checkpoint_header_file(t.init) if t.fresh_init else checkpoint_model(t.init)
    inputs = {"training": settings_file(name, "training"), "execution": ancient(settings_file(name, "execution")),
              "dataset": ancient(dataset_zip(t.dataset)), "init": ancient(init)}
    if t.discriminator is not None and t.discriminator.init:  # a GAN-pretrained discriminator (Table 1)
        inputs["d_init"] = ancient(checkpoint_model(t.discriminator.init))
    inputs["weights"] = [ancient(weight_file(n)) for n in training_weights(t)]  # pretrained networks, class embedding
    return inputs


def d_init_arg(wildcards, input):
    """train.py's arguments for the pre-trained inputs: Table 1's StyleGAN2 D, the registry weights it reads."""
    args = [f"--d-init {input.d_init}"] if "d_init" in input.keys() else []
    return " ".join(args + [f"--weights {w}" for w in input.weights])


def sample_inputs(wildcards):
    """A sample set's settings and network: the final model, or (best/) the run's lowest-FID snapshot."""
    name = wildcards.experiment
    best = getattr(wildcards, "best", "")
    model = f"{R}/{name}/best/model.safetensors" if best else experiment_model(name)
    return {"sampling": settings_file(name, "sampling"), "model": model}


def metric_inputs(wildcards):
    e = exp(wildcards)
    ds = config["datasets"][e.dataset]
    inputs = {"samples": f"{R}/{wildcards.experiment}/{wildcards.best}samples.zip",
              "evaluation": settings_file(wildcards.experiment, "evaluation")}
    m = wildcards.metric
    inputs["weights"] = metric_weight_files(m)
    if m == "fid":
        inputs["ref"] = f"{S}/fid-refs/{e.dataset}.npz" if ("fid_ref" in ds and METRIC_EXTRACTOR == "inception") else ref_stats(e.dataset)
    elif m in ("fid_dataset", "clip_fid"):
        inputs["ref"] = ref_stats(e.dataset, clip=(m == "clip_fid"))
    elif m == "pr":
        inputs["ref"] = f"{S}/pr-refs/{e.dataset}.npz" if "pr_ref" in ds else dataset_zip(e.dataset)
    return inputs


def metric_ref_check(wildcards, input):
    """How a metric job verifies a downloaded reference (EDM's FID statistics, the ImageNet P/R batch) before it reads
    it: the registry's SHA-256 or the lock file's entry ({} for statistics the DAG computes itself)."""
    for kind, key in (("fid-refs", "fid_ref"), ("pr-refs", "pr_ref")):
        if "ref" in input.keys() and input.ref.startswith(f"{S}/{kind}/"):
            ds = exp(wildcards).dataset
            return {"sha256": config["datasets"][ds][key].get("sha256", ""), "key": f"{kind}:{ds}",
                    "lock": config["checkpoint_lock"]}
    return {}


def ref_download(wildcards, kind):
    ds = config["datasets"][wildcards.dataset]
    key = {"fid-refs": "fid_ref", "pr-refs": "pr_ref"}[kind]
    if key not in ds:
        raise WorkflowError(f"datasets.{wildcards.dataset}.{key} is not set; this dataset has no published {kind}")
    return ds[key]


def snapshot_metric_files(wildcards):
    return [f"{R}/{wildcards.experiment}/snapshot-metrics/fid-{k:06d}.json" for k in exp(wildcards).training.snapshot_kimgs()]


def report_inputs(section, item):
    """Every artefact a table or figure needs, derived from its slots in the registry."""
    spec = config[section][item]
    files = []
    if item == "table10":  # hyper-parameters: from the settings alone (the params of the table rule)
        return files
    for name in dict.fromkeys(spec["slots"].values()):
        if item in ("fig4", "fig6"):
            continue
        if item in ("grids", "fig5"):
            files.append(f"{R}/grids/{name}.npz")
            if item == "grids":  # a row of real images beside the samples
                files.append(dataset_zip(EXPERIMENTS[name].dataset))
        else:
            files += metric_files(name)
    if item in ("fig4", "fig6"):
        files.append(f"{R}/analysis/frequency.npz")
    return files


def demo_targets(wildcards):
    """The demo target exists with the demo registry only (with the paper registry it would plan the whole paper)."""
    if config["name"] != "demo":
        raise WorkflowError(f"`demo` is the offline demo's target: run `snakemake --configfile config/demo.yaml --cores 2 "
                            f"demo` (this is the {config['name']!r} registry, where `demo` would plan every paper job)")
    return paper_targets()


def unknown_target(wildcards):
    """A results path that names no experiment, table or figure of this registry (the unknown_target rule) gets one
    line with the valid names ("did you mean"), instead of Snakemake's generic MissingRuleException."""
    path = f"{R}/{wildcards.unknown}"
    raise WorkflowError(target_error(path, config) or f"{path}: no rule of this registry makes it")


def known_results():
    """A regex matching the results paths of the registry's names, which `unknown_target` never matches: it is only a
    candidate for a path that names something unknown (so it costs the DAG of valid targets nothing)."""
    exps, tables, figures = (_alt(config[k]) for k in ("experiments", "tables", "figures"))
    return (rf"(?:{exps})/|(?:grids/(?:{exps})|tables/(?:{tables})|figures/(?:{figures})|scorecard)\.[a-z]+$"
            rf"|(?:checkpoints|refs|analysis)/")


def check_cluster():
    """Before any job (onstart): `--profile slurm` on a machine without SLURM's client tools fails in one line."""
    import shutil

    executor = getattr(workflow.executor_plugin, "name", "") or ""
    missing = [tool for tool in ("sbatch", "sacct") if shutil.which(tool) is None]
    if "slurm" in executor and missing:
        raise WorkflowError(f"--profile slurm: this machine has no SLURM client ({', '.join(missing)} not found); run "
                            f"on the cluster's login node, or locally without the profile: snakemake --cores N <target>")


def paper_targets():
    """Every table, figure, the scorecard and the sample grids the registry declares."""
    out = [f"{R}/tables/{t}.tex" for t in config["tables"]] + [f"{R}/tables/{t}.md" for t in config["tables"]]
    out += [f"{R}/figures/{f}.pdf" for f in config["figures"]] + [f"{R}/figures/{f}.png" for f in config["figures"]]
    out += [f"{R}/scorecard.md", f"{R}/scorecard.csv"]
    return out


# ------------------------------------------------------------------------------------------------ resources


def _gpus(e):
    return e.resources.gpus


def train_gpus(wildcards):
    return _gpus(exp(wildcards, "train_experiment"))


def train_runtime(wildcards, attempt):
    """Minutes: the expected hours, growing with each retry (time-limit resubmission) up to max_hours."""
    r = exp(wildcards, "train_experiment").resources
    return math.ceil(min(r.hours * attempt, r.max_hours) * 60)


def train_priority(wildcards):
    """Longest first: a training's planned kimg, so that on a few cores the long runs start before the short ones, which
    then fill the gaps beside them (the demo: a 469-iteration run does not wait behind the ablation rows)."""
    return exp(wildcards, "train_experiment").training.duration_mimg * 1000


def demo_cnn_priority(wildcards):
    """A demo CNN that a training reads (the discriminator's backbone) with the pre-training, before the metric
    extractor, which only the evaluations read: the scratch run (no pre-trained weights) can start beside it."""
    return 10 if any(e.training is not None and wildcards.demo_cnn in training_weights(e.training)
                     for e in EXPERIMENTS.values()) else 0


def callable_priority(function):
    """A callable priority needs Snakemake's Rule.expand_priority (snakemake/snakemake#3253); older 9.x: none."""
    return function if hasattr(SnakemakeRule, "expand_priority") else 0


def train_threads(wildcards):
    """CPU threads of the training job: cpus_per_gpu beside each GPU (split over its processes), else the registry's."""
    r = exp(wildcards, "train_experiment").resources
    return r.gpus * r.cpus_per_gpu if r.gpus else r.threads


def job_threads(wildcards):
    """CPU threads of a sampling/evaluation job: the registry's CPU threads, or 8 beside its GPU."""
    return 8 if job_gpus(wildcards) else exp(wildcards).resources.threads


def slurm_signal(wildcards):
    """SLURM's warning signal (USR1) half the stop margin before the time limit: a backstop, since the trainer
    already saves its state and exits `stop_margin_s` before the limit (it reads the job's end time)."""
    margin = exp(wildcards, "train_experiment").execution.stop_margin_s
    return f"'--signal=USR1@{max(10, int(margin // 2))}'"


def job_gpus(wildcards):
    """Sampling / evaluation jobs: one GPU when the experiment trains on GPUs (0 on a CPU-only registry)."""
    return min(1, _gpus(exp(wildcards)))


def _python():
    """The interpreter running Snakemake (also inside a SLURM job), or the conda env's `python` under --sdm conda."""
    methods = getattr(getattr(workflow, "deployment_settings", None), "deployment_method", ()) or ()
    return "python" if any("conda" in str(m).lower() for m in methods) else sys.executable


PYTHON = _python()  # in shell commands (not params: moving the venv or the checkout reruns nothing)
