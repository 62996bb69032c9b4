"""Typed experiment settings: one frozen object per resolved experiment, every knob with a one-line meaning.

The registry (d2o.config) resolves an experiment into a validated dict; `Experiment.from_resolved` turns it into
the object that the Trainer, the samplers, the metrics and the workflow scripts take. Its parts say what each knob
can change, and the DAG reruns exactly the jobs a change reaches:

    Experiment
      training    Training | None    what defines a training run: the run identity hashes it (train jobs)
      execution   Execution | None   how a run executes: the same iteration whatever they are (never reruns)
      sampling    Sampling           how images are generated from the network (sample jobs)
      evaluation  Evaluation         how the images are scored (metric jobs)
      resources   Resources          what a job asks the scheduler for (never changes a result, never reruns)
      description, label             text (never reruns)

Knobs a part does not use are config errors naming the key (`unused_keys`), never silently dropped: e.g.
`discriminator.resolution` means nothing to a `vgg16` discriminator, `cd.*` nothing to a GAN-only run, `lr_g`
nothing to an EDM sampler baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass

# Discriminator knobs per type (with their defaults), beside the ones every type takes (COMMON).
DISCRIMINATOR_COMMON = {"type": "projected", "ada_target": None, "ada_kimg": 500.0}
DISCRIMINATOR_KEYS = {
    "projected": {"backbones": ("vgg16_bn", "tf_efficientnet_lite0"), "resolution": 224, "diffaug": False, "cout": 64,
                  "class_embedding": None, "projections": "per_gpu"},
    "vgg16": {},
    "lpips": {},
    "stylegan2": {"channel_max": 512, "init": None},
}
# Experiment keys an edm_sampler experiment takes; the other keys are training knobs.
SAMPLER_EXPERIMENT_KEYS = ("kind", "description", "dataset", "conditional", "sampler", "eval", "resources")
# Training knobs a method does not use.
METHOD_UNUSED = {"gan": ("cd",), "cd": ("discriminator", "loss", "r1_gamma", "r1_interval", "lr_d", "lazy_adam"),
                 "gan+cd": ()}
# The parts of an Experiment the DAG writes to files (rule `settings`), each read by the jobs it can change.
PARTS = ("training", "execution", "sampling", "evaluation")
# Keys of the resolved dict that go to Execution rather than Training.
EXECUTION_KEYS = ("round_batch", "compile", "deterministic", "state_minutes", "stop_margin_s", "log_every_kimg",
                  "keep_state")


class SettingsError(ValueError):
    """Settings that do not fit together; the message names the key and the fix."""


# ----------------------------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Discriminator:
    type: str                           # projected (D2O) | vgg16 | lpips | stylegan2 (Table 1 rows)
    ada_target: float | None            # ADA ('bgc' pipe) with this target sign of real logits (0.6); None = off
    ada_kimg: float                     # ADA: images (kimg) for its probability p to move by 1
    backbones: tuple[str, ...] | None   # projected: frozen feature networks, 4 taps each
    resolution: int | None              # projected: side the backbones' inputs are resized to (224)
    diffaug: bool | None                # projected: DiffAugment (color, translation, cutout) before each backbone
    cout: int | None                    # projected: width of the random CCM/CSM projections (64)
    class_embedding: str | None         # projected, conditional: weights its heads' class embeddings start from
    projections: str | None             # projected: per_gpu (each virtual GPU its random projection, as coded) | shared
    channel_max: int | None             # stylegan2: widest layer (512)
    init: str | None                    # stylegan2: checkpoint (kind stylegan2ada-discriminator) to start from

    def build_kwargs(self) -> dict:
        """The keyword arguments of this type's class (d2o.discriminators.build_discriminator)."""
        return {k: getattr(self, k) for k in DISCRIMINATOR_KEYS[self.type]
                if k not in ("init", "class_embedding", "projections")}


@dataclass(frozen=True)
class Loss:
    kind: str          # ns (non-saturating, D2O) | hinge
    aggregation: str   # sample_sum (the authors' per-sample sum, spec §4) | mean (the paper's expectation)


@dataclass(frozen=True)
class CD:
    N: int                  # discretisation steps of the noise schedule T(i, N) (18)
    rho: float              # schedule curvature (7)
    weight: float           # weight of the CD loss in the G loss (gan+cd)
    lpips_resolution: int   # LPIPS input size (224)
    i_min: int              # smallest step index drawn (paper Table 7: 1; released code: 2)


@dataclass(frozen=True)
class Snapshots:
    first: float   # kimg of the first EMA snapshot (200)
    every: float   # kimg between later snapshots (250)


@dataclass(frozen=True)
class Training:
    """What defines a training run; `run_identity` hashes all of it (and the inputs' contents) but the duration."""
    dataset: str                  # registry dataset trained on
    dataset_images: int | None    # images a complete copy of it has (registry `expected`; checked at start)
    label_dim: int                # classes of a conditional run (0 = unconditional)
    offline: bool                 # random-init feature networks in D and LPIPS (the registry's `offline`)
    init: str                     # checkpoint the generator starts from (converted EDM network); also the CD teacher
    init_weights: str             # pretrained: the checkpoint's weights | random: its architecture, fresh weights
    method: str                   # gan (D2O) | cd (consistency distillation) | gan+cd (Fig 3B)
    generator_steps: int          # network evaluations of the generator (1 = D2O; 2..10: Fig 2 teachers)
    middle_sigma: float | None    # 2-step generator: fixed middle noise level (Fig 2B); None = T(1, 2)
    freeze: tuple[str, ...]       # generator parameter groups frozen (D2O-F: conv; d2o.freezing)
    freeze_rule: str              # groups: the Table 3 labelling | authors: the released code's name rule
    discriminator: Discriminator | None   # None for method cd
    loss: Loss | None             # GAN loss (None for method cd)
    r1_gamma: float | None        # R1 weight (None = off)
    r1_interval: int | None       # lazy R1: one R1 step every this many iterations (16)
    lazy_adam: str | None         # D Adam's lazy-R1 correction: always (as coded, also without R1) | with_r1
    cd: CD | None                 # consistency distillation settings (methods cd, gan+cd)
    lr_g: float                   # generator Adam learning rate (betas 0, 0.99)
    lr_d: float | None            # discriminator Adam learning rate (before the lazy-R1 correction)
    batch: int                    # global batch per iteration
    batch_gpu: int                # samples per (virtual) GPU: fixes the per-sample-sum loss weighting
    ema_halflife_mimg: float      # EMA half-life (Mimg)
    ema_rampup: float | None      # EMA warm-up ratio: half-life at most this times the images seen (None = off)
    duration_mimg: float          # training images (Mimg): where the run stops
    snapshot_kimg: Snapshots      # when EMA snapshots are written
    precision: str                # generator on CUDA: bf16 (the authors' explicit casts) | bf16-autocast | fp32
    d_precision: str              # discriminator on CUDA: fp32 with TF32 off (the authors') | tf32 | bf16
    seed: int                     # seed of every random stream
    data_order: str               # authors: EDM's InfiniteSampler (window 0.5) as coded | epochs: a permutation per epoch
    fake_labels: str              # conditional: fakes get the real minibatch's labels (real, as coded) | drawn

    @property
    def uses_gan(self) -> bool:
        return self.method in ("gan", "gan+cd")

    @property
    def uses_cd(self) -> bool:
        return self.method in ("cd", "gan+cd")

    @property
    def fresh_init(self) -> bool:
        """The generator starts from fresh weights and nothing reads the checkpoint's (no CD teacher): the run needs
        only the checkpoint's network header (rule checkpoint_header)."""
        return self.init_weights == "random" and not self.uses_cd

    @property
    def total_img(self) -> int:
        return round(self.duration_mimg * 1e6)

    def snapshot_kimgs(self) -> list[int]:
        """Image counts (kimg) of the EMA snapshots: `first`, every multiple of `every`, the end (rounded to whole
        kimg; only counts the run reaches)."""
        total = round(self.duration_mimg * 1000)
        first, every = self.snapshot_kimg.first, self.snapshot_kimg.every
        points = {round(first)} | {round(every * i) for i in range(1, int(total // every) + 1)} | {total}
        return sorted(p for p in points if 0 < p and p * 1000 <= self.total_img)


@dataclass(frozen=True)
class Execution:
    """How a run executes: the same iteration (within float rounding) whatever these are; not in the identity."""
    round_batch: int | None   # samples per forward/backward pass (several virtual GPUs per pass); None = batch_gpu
    compile: str              # torch.compile mode: off | default | reduce-overhead | max-autotune
    deterministic: bool       # deterministic algorithms (bitwise resume on CPU)
    state_minutes: float      # minutes between training-state saves
    stop_margin_s: float      # under SLURM: save and exit this long before the job's time limit
    log_every_kimg: float     # kimg between log lines / stats records
    keep_state: bool          # keep a finished run's training state (false: deleted once the model is written)


@dataclass(frozen=True)
class Heun:
    checkpoint: str   # EDM checkpoint sampled
    num_steps: int    # Heun steps (18 = NFE 35; 40 = NFE 79)
    S_churn: float    # EDM stochasticity (0 = deterministic)
    S_min: float
    S_max: float
    S_noise: float


@dataclass(frozen=True)
class Sampling:
    """How an experiment's images are generated: EDM's per-seed noise for seeds 0..num_samples-1 (d2o.sampling)."""
    label_dim: int                    # classes drawn per seed after its latent (0 = unconditional)
    generator_steps: int | None       # the trained generator's network evaluations (None for EDM's sampler)
    middle_sigma: float | None        # 2-step generator: its fixed middle noise level (d2o.generator)
    heun: Heun | None                 # EDM's Heun sampler (the EDM baseline rows)
    num_samples: int                  # images in the evaluation set
    shards: int                       # sampling jobs it is split into
    batch: int                        # images per network call

    @property
    def method(self) -> str:
        if self.heun is not None:
            return "edm_heun"
        return "one_step" if self.generator_steps == 1 and self.middle_sigma is None else "multistep"


@dataclass(frozen=True)
class MetricFeatures:
    """The registry's feature extractors (`metrics`): one setting for every metric of the registry."""
    extractor: str                 # inception (the paper protocol) | demo-trained (the DAG's demo CNN) | demo (random CNN)
    offline: bool                  # random-init extractors (no weight files)
    batch: int                     # images per feature batch
    demo_extractor: str | None     # demo-trained: the registry's demo_cnns entry every metric reads (None otherwise)


@dataclass(frozen=True)
class Evaluation:
    """How an experiment's images are scored."""
    metrics: tuple[str, ...]           # fid | fid_dataset | is | pr | clip_fid
    num_samples: int                   # images scored (= Sampling.num_samples)
    snapshot_metrics: bool             # FID of every training snapshot (FID-vs-images curves)
    snapshot_num_samples: int          # images per snapshot FID
    compare_with: tuple[str, ...]      # experiments whose samples this one is compared with (Fig 2)
    features: MetricFeatures           # feature extractors
    label: str                         # printed with every number ("paper protocol" / demo label)


@dataclass(frozen=True)
class Resources:
    """What a job asks the scheduler for; never changes a result."""
    gpus: int           # GPUs of the training job (0 = CPU)
    hours: float        # expected wall-clock hours (grows with each retry)
    max_hours: float    # cap of that growth
    cpus_per_gpu: int
    mem_mb: int
    threads: int        # CPU threads when gpus = 0


@dataclass(frozen=True)
class Experiment:
    name: str
    kind: str                       # train | edm_sampler
    description: str
    dataset: str
    conditional: bool
    label_dim: int
    training: Training | None
    execution: Execution | None
    sampling: Sampling
    evaluation: Evaluation
    resources: Resources
    label: str
    offline: bool

    @classmethod
    def from_resolved(cls, r: dict) -> "Experiment":
        """The typed settings of a resolved experiment dict (d2o.config.resolve_experiment). Raises SettingsError
        naming `experiments.<name>.<key>` for a knob the experiment does not use or settings that do not fit."""
        name = r["name"]
        bad = unused_keys(r)
        if bad:
            key, why = bad[0]
            raise SettingsError(f"experiments.{name}.{key}: {why}; remove it")
        training = execution = None
        ev = r["eval"]
        features = metric_features_of(r["metrics"], r["offline"])
        if r["kind"] == "train":
            training, execution = _training(r), _execution(r)
            sampling = Sampling(r["label_dim"], training.generator_steps, training.middle_sigma, None,
                                ev["num_samples"], ev["shards"], ev["batch"])
        else:
            s = r["sampler"]
            heun = Heun(s["checkpoint"], s["num_steps"], float(s["S_churn"]), float(s["S_min"]), float(s["S_max"]),
                        float(s["S_noise"]))
            sampling = Sampling(r["label_dim"], None, None, heun, ev["num_samples"], ev["shards"], ev["batch"])
        evaluation = Evaluation(tuple(ev["metrics"]), ev["num_samples"], ev["snapshot_metrics"],
                                ev["snapshot_num_samples"], tuple(ev["compare_with"]), features, r["label"])
        res = r["resources"]
        resources = Resources(res["gpus"], float(res["hours"]), float(res["max_hours"]), res["cpus_per_gpu"],
                              res["mem_mb"], res["threads"])
        return cls(name, r["kind"], r.get("description", ""), r["dataset"], r["conditional"], r["label_dim"], training,
                   execution, sampling, evaluation, resources, r["label"], r["offline"])

    def part(self, name: str) -> dict:
        """One part as a plain JSON-able dict (the files the DAG tracks: rule `settings`)."""
        value = getattr(self, name)
        return {"experiment": self.name, name: None if value is None else to_dict(value)}


def unused_keys(r: dict) -> list[tuple[str, str]]:
    """(key, why) for every knob of a resolved experiment dict that its kind, method or discriminator type does not
    use. d2o.config drops such knobs when they are inherited from a link that did not choose the kind, method or
    type; a knob written for one is an error."""
    out = []
    if r.get("kind", "train") != "train":
        out += [(k, f"an {r['kind']} experiment does not use it (it takes {', '.join(SAMPLER_EXPERIMENT_KEYS)})")
                for k in r if k not in SAMPLER_EXPERIMENT_KEYS + ("name", "label_dim", "offline", "label", "metrics",
                                                                  "dataset_images")]
        return out
    if "sampler" in r:
        out.append(("sampler", "a train experiment does not use it (sampler settings are for kind edm_sampler)"))
    method = r.get("method", "gan")
    out += [(k, f"method {method!r} does not use it") for k in METHOD_UNUSED.get(method, ()) if k in r]
    d = r.get("discriminator")
    if isinstance(d, dict) and "discriminator" not in METHOD_UNUSED.get(method, ()):
        dtype = d.get("type", DISCRIMINATOR_COMMON["type"])
        allowed = set(DISCRIMINATOR_COMMON) | set(DISCRIMINATOR_KEYS.get(dtype, {}))
        out += [(f"discriminator.{k}", f"discriminator type {dtype!r} does not use it (its keys: "
                 f"{', '.join(sorted(allowed))})") for k in d if k not in allowed]
        if d.get("class_embedding") and not r.get("conditional", False):
            out.append(("discriminator.class_embedding", "an unconditional run has no class embedding"))
    if r.get("middle_sigma") is not None and r.get("generator_steps", 1) != 2:
        out.append(("middle_sigma", f"only a 2-step generator has a middle sigma (generator_steps is "
                    f"{r.get('generator_steps', 1)})"))
    return out


def _training(r: dict) -> Training:
    name, gan = r["name"], r["method"] != "cd"
    d = dict(r["discriminator"]) if gan else None
    disc = None
    if gan:
        dtype = d.get("type", DISCRIMINATOR_COMMON["type"])
        if dtype not in DISCRIMINATOR_KEYS:
            raise SettingsError(f"experiments.{name}.discriminator.type: {dtype!r}; valid choices: "
                                f"{', '.join(DISCRIMINATOR_KEYS)}")
        full = {**DISCRIMINATOR_COMMON, **{k: None for t in DISCRIMINATOR_KEYS.values() for k in t},
                **DISCRIMINATOR_KEYS[dtype], **d}
        if full["backbones"] is not None:
            full["backbones"] = tuple(full["backbones"])
        if full["ada_kimg"] is not None:
            full["ada_kimg"] = float(full["ada_kimg"])
        disc = Discriminator(**full)
    batch_gpu = batch_split(r["batch"], max(r["resources"]["gpus"], 1), r.get("batch_gpu"), r.get("round_batch"),
                            disc is None or disc.type == "projected", f"experiments.{name}", "resources.gpus")[0]
    required = ["init", "lr_g", "batch", "ema_halflife_mimg", "duration_mimg"] + (["lr_d"] if gan else [])
    missing = [k for k in required if r.get(k) is None]
    if missing:
        raise SettingsError(f"experiments.{name}.{missing[0]}: a {r['method']!r} training run needs it; set it")
    cd = CD(**{**r["cd"], "rho": float(r["cd"]["rho"]), "weight": float(r["cd"]["weight"])}) if r["method"] != "gan" else None
    return Training(
        dataset=r["dataset"], dataset_images=r.get("dataset_images"), label_dim=r["label_dim"], offline=r["offline"], init=r["init"],
        init_weights=r["init_weights"], method=r["method"], generator_steps=r["generator_steps"],
        middle_sigma=None if r["middle_sigma"] is None else float(r["middle_sigma"]), freeze=tuple(r["freeze"]),
        freeze_rule=r["freeze_rule"], discriminator=disc, loss=Loss(**r["loss"]) if gan else None,
        r1_gamma=(None if not r["r1_gamma"] else float(r["r1_gamma"])) if gan else None,
        r1_interval=r["r1_interval"] if gan else None, lazy_adam=r["lazy_adam"] if gan else None, cd=cd, lr_g=float(r["lr_g"]),
        lr_d=float(r["lr_d"]) if gan else None, batch=r["batch"], batch_gpu=batch_gpu,
        ema_halflife_mimg=float(r["ema_halflife_mimg"]),
        ema_rampup=None if r["ema_rampup"] is None else float(r["ema_rampup"]), duration_mimg=float(r["duration_mimg"]),
        snapshot_kimg=Snapshots(float(r["snapshot_kimg"]["first"]), float(r["snapshot_kimg"]["every"])),
        precision=r["precision"], d_precision=r["d_precision"], seed=r["seed"], data_order=r["data_order"],
        fake_labels=r["fake_labels"])


def batch_split(batch: int, gpus: int, batch_gpu: int | None, round_batch: int | None, projected: bool, where: str,
                gpus_key: str = "GPUs") -> tuple[int, int, int, int]:
    """(batch_gpu, virtual GPUs per GPU, virtual GPUs per pass, passes per iteration) of `batch` on `gpus` GPUs.

    batch = gpus x virtual x batch_gpu; a pass of round_batch samples holds round_batch / batch_gpu virtual GPUs of
    one GPU (D's heads keep their BatchNorm statistics apart: projected D only). The one check of these rules, at
    config load (registry GPUs) and at Trainer start (the GPUs it runs on)."""
    bg = batch_gpu or batch // gpus
    if bg < 1 or batch % (gpus * bg):
        raise SettingsError(f"{where}.batch_gpu: batch {batch} is not a multiple of {gpus_key} ({gpus}) x batch_gpu "
                            f"({bg}); choose GPUs and batch_gpu whose product divides it")
    per_gpu = batch // gpus
    rb = round_batch or bg
    if rb % bg or per_gpu % rb:
        choices = [str(k * bg) for k in range(1, per_gpu // bg + 1) if per_gpu % (k * bg) == 0]
        raise SettingsError(f"{where}.round_batch: {rb} must be a multiple of batch_gpu ({bg}) that divides the "
                            f"{per_gpu} samples per GPU (batch {batch} / {gpus_key} {gpus}); choose one of {', '.join(choices)}")
    if rb > bg and not projected:
        raise SettingsError(f"{where}.round_batch: several virtual GPUs per pass need the projected discriminator (the "
                            f"other types couple samples in other ways); remove round_batch")
    virtual, group = per_gpu // bg, rb // bg
    return bg, virtual, group, virtual // group


def _execution(r: dict) -> Execution:
    compile_mode = "off" if r["compile"] in (False, "off") else r["compile"]
    return Execution(r["round_batch"], compile_mode, r["deterministic"], float(r["state_minutes"]),
                     float(r["stop_margin_s"]), float(r["log_every_kimg"]), bool(r["keep_state"]))


# ----------------------------------------------------------------------------------------------------------- JSON


def to_dict(obj) -> dict:
    """A settings object as plain JSON types (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def metric_features_of(metrics: dict, offline: bool) -> MetricFeatures:
    """The typed `metrics` block of a registry (the demo extractor's spec only where it is the extractor)."""
    demo = metrics.get("demo_extractor") if metrics["extractor"] == "demo-trained" else None
    return MetricFeatures(metrics["extractor"], offline, metrics["batch"], demo)


def from_dict(cls, data: dict):
    """Rebuild a settings dataclass (nested parts included) from `to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SettingsError(f"{cls.__name__}: unknown key(s) {sorted(unknown)}; valid keys: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        v = data[f.name]
        part = next((t for t in typing.get_args(hints[f.name]) + (hints[f.name],) if dataclasses.is_dataclass(t)), None)
        if part is not None and isinstance(v, dict):
            v = from_dict(part, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def read_part(path, name: str):
    """One part written by the DAG (`Experiment.part`), as its typed object (None where the experiment has none)."""
    with open(path) as f:
        data = json.load(f)
    cls = {"training": Training, "execution": Execution, "sampling": Sampling, "evaluation": Evaluation}[name]
    return data["experiment"], None if data[name] is None else from_dict(cls, data[name])


def digest(obj) -> str:
    """SHA-256 of the canonical JSON of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
