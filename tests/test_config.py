"""The config registry: both registries validate; bad input gives one-line errors naming the key and the fix; every
experiment resolves into typed settings (d2o.settings) with no knob it does not use."""
import copy

import pytest
import yaml

from d2o.config import ConfigError, experiment_settings, load_config, resolve_experiment, validate
from d2o.settings import Experiment, SettingsError

PAPER, DEMO = "config/config.yaml", "config/demo.yaml"


@pytest.fixture(scope="module")
def paper():
    return load_config(PAPER)


def raw(path):
    with open(path) as f:
        return yaml.safe_load(f)


def test_registries_validate(paper):
    demo = load_config(DEMO)
    assert paper["name"] == "paper" and demo["name"] == "demo"
    assert demo["offline"] is True and "not comparable" in demo["label"]
    assert set(paper["tables"]) == {"table1", "table2", "table3", "table4", "table5", "table6", "table10", "table11", "table12"}


def test_resolution_chain(paper):
    e = resolve_experiment(paper, "cifar10-uncond-freeze-skip")
    assert e["freeze"] == ["conv", "qkv", "skip"]
    assert e["lr_g"] == 1e-4 and e["batch"] == 256          # Table 10 via dataset_defaults
    assert e["discriminator"]["backbones"] == ["vgg16_bn", "tf_efficientnet_lite0"]
    assert e["eval"]["metrics"] == ["fid"]
    imagenet = resolve_experiment(paper, "imagenet64-d2o-f")
    assert imagenet["r1_gamma"] == 4e-4 and imagenet["lr_g"] == 8e-6 and imagenet["label_dim"] == 1000
    assert imagenet["discriminator"]["backbones"][0] == "deit_base_distilled_patch16_224"
    assert resolve_experiment(paper, "afhqv2-d2o-f")["duration_mimg"] == 10


def test_unknown_experiment_names_choices(paper):
    with pytest.raises(ConfigError, match=r"unknown experiment 'cifar10-uncond-d2o-ff'.*did you mean cifar10-uncond-d2o-f"):
        resolve_experiment(paper, "cifar10-uncond-d2o-ff")


def test_bad_value_names_key_and_choices():
    cfg = raw(PAPER)
    cfg["experiments"]["cifar10-uncond-d2o"]["freeze"] = ["convs"]
    with pytest.raises(ConfigError, match=r"experiments\.cifar10-uncond-d2o\.freeze\.0: 'convs' is not one of.*valid choices: norm, conv"):
        validate(cfg, "x.yaml")


def test_unknown_key_lists_valid_keys():
    cfg = raw(PAPER)
    cfg["experiments"]["cifar10-uncond-d2o"]["lr_gen"] = 1
    with pytest.raises(ConfigError, match=r"x.yaml: experiments\.cifar10-uncond-d2o\.lr_gen: .*'lr_gen'.*did you mean lr_g.*valid keys:"):
        validate(cfg, "x.yaml")


def test_per_gpu_batch_is_the_papers_and_must_divide(paper):
    """The registry pins the paper's 8-GPU per-GPU batch (spec §4 loss weighting); fewer GPUs only add rounds."""
    assert experiment_settings(paper, "cifar10-uncond-d2o").training.batch_gpu == 32
    assert experiment_settings(paper, "imagenet64-d2o").training.batch_gpu == 64
    assert experiment_settings(paper, "cifar10-uncond-d2o-f-trainsh").training.batch_gpu == 64   # train.sh: 4 GPUs x 64
    cfg = raw(PAPER)
    cfg["experiments"]["cifar10-uncond-d2o"]["resources"] = {"gpus": 3}
    with pytest.raises(ConfigError, match=r"x.yaml: dataset_defaults\.cifar10\.batch_gpu: batch 256 is not a multiple "
                                          r"of resources\.gpus \(3\) x batch_gpu \(32\).*\(experiment cifar10-uncond-d2o\)"):
        validate(cfg, "x.yaml")


def test_round_batch_is_checked_at_config_time():
    """round_batch groups whole virtual GPUs of one GPU; a bad value names the key and the valid choices."""
    def with_run(**keys):
        cfg = raw(PAPER)
        cfg["experiments"]["x"] = {"extends": "cifar10-uncond-d2o", **keys}
        return cfg

    cfg = validate(with_run(round_batch=128, resources={"gpus": 2, "hours": 6}), "x.yaml")
    assert resolve_experiment(cfg, "x")["round_batch"] == 128
    with pytest.raises(ConfigError, match=r"x.yaml: experiments\.x\.round_batch: 48 must be a multiple of batch_gpu "
                                          r"\(32\) that divides the 128 samples per GPU .*choose one of 32, 64, 128$"):
        validate(with_run(round_batch=48, resources={"gpus": 2, "hours": 6}), "x.yaml")
    with pytest.raises(ConfigError, match=r"experiments\.x\.round_batch: several virtual GPUs per pass need the projected "
                                          r"discriminator"):
        validate(with_run(round_batch=64, resources={"gpus": 2, "hours": 6}, discriminator={"type": "vgg16"}), "x.yaml")


def test_checkpoint_kinds_are_checked():
    """discriminator.init names a StyleGAN2-ADA discriminator checkpoint, generator init an EDM one; errors name the key."""
    assert resolve_experiment(validate(raw(PAPER), "x.yaml"), "cifar10-uncond-d-sg2-pretrained")["discriminator"]["init"] \
        == "stylegan2ada-cifar10"
    cases = [({"extends": "cifar10-uncond-d-sg2-scratch", "discriminator": {"init": "edm-cifar10-uncond"}},
              r"experiments\.x\.discriminator\.init: checkpoint 'edm-cifar10-uncond' is of kind 'edm', this key needs "
              r"kind 'stylegan2ada-discriminator'; choose one of stylegan2ada-cifar10"),
             ({"extends": "cifar10-uncond-d2o", "init": "stylegan2ada-cifar10"},
              r"experiments\.x\.init: checkpoint 'stylegan2ada-cifar10' is of kind 'stylegan2ada-discriminator'"),
             ({"extends": "cifar10-uncond-d2o", "discriminator": {"init": "stylegan2ada-cifar10"}},
              r"experiments\.x\.discriminator\.init: discriminator type 'projected' does not use it"),
             ({"extends": "cifar10-uncond-d-sg2-scratch", "discriminator": {"init": "sg2"}},
              r"experiments\.x\.discriminator\.init: unknown checkpoint 'sg2'")]
    for keys, message in cases:
        cfg = raw(PAPER)
        cfg["experiments"]["x"] = keys
        with pytest.raises(ConfigError, match=message):
            validate(cfg, "x.yaml")


def test_missing_top_level_key():
    cfg = raw(DEMO)
    del cfg["paths"]
    with pytest.raises(ConfigError, match=r"'paths' is a required property"):
        validate(cfg, "demo.yaml")


def test_table_slot_must_name_an_experiment():
    cfg = raw(DEMO)
    cfg["tables"]["table4"]["slots"]["d2o_uncond"] = "demo-nope"
    with pytest.raises(ConfigError, match=r"tables\.table4\.slots\.d2o_uncond: unknown experiment 'demo-nope'"):
        validate(cfg, "demo.yaml")


def test_extends_cycle_and_conditional_without_labels():
    cfg = raw(DEMO)
    cfg["experiments"]["demo-d2o"]["extends"] = "demo-d2o-f"
    with pytest.raises(ConfigError, match="cycle"):
        validate(copy.deepcopy(cfg), "demo.yaml")
    cfg = raw(PAPER)
    cfg["experiments"]["afhqv2-d2o"]["conditional"] = True
    with pytest.raises(ConfigError, match="has no labels"):
        validate(cfg, "config.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("config/nope.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nexperiments:\n  a: {lr_g: [1, 2}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml:3:\d+: not valid YAML"):
        load_config(bad)
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="a registry is a YAML mapping"):
        load_config(tmp_path / "list.yaml")


def test_overlays_merge_as_snakemake_merges_them(paper):
    smoke = load_config(PAPER, "config/smoke.yaml")
    assert smoke["name"] == "smoke" and smoke["experiments"].keys() == paper["experiments"].keys()
    assert experiment_settings(smoke, "imagenet64-d2o-f").training.batch == 2


def test_check_config_tool(tmp_path):
    import subprocess
    import sys

    tool = [sys.executable, "tools/check_config.py"]
    ok = subprocess.run([*tool, DEMO], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout
    (tmp_path / "bad.yaml").write_text("experiments:\n  a: [1\n")
    bad = subprocess.run([*tool, str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert bad.returncode == 1 and "bad.yaml:3:1: not valid YAML" in bad.stderr and "Traceback" not in bad.stderr


def test_snapshot_schedule(paper):
    ks = experiment_settings(paper, "cifar10-uncond-d2o").training.snapshot_kimgs()
    assert ks[:3] == [200, 250, 500] and ks[-1] == 5000 and len(ks) == 21


def test_compile_off_unquoted_is_accepted():
    """YAML reads `compile: off` as False; both spellings validate (the Trainer treats both as eager)."""
    cfg = load_config("config/demo.yaml")
    cfg["experiments"]["demo-d2o"]["compile"] = yaml.safe_load("compile: off")["compile"]
    validate(cfg)
    cfg["experiments"]["demo-d2o"]["compile"] = "fast"
    with pytest.raises(ConfigError, match="experiments.demo-d2o.compile"):
        validate(cfg)


def test_every_experiment_is_typed_with_only_the_knobs_it_uses(paper):
    """Table 1 rows change the discriminator type through `extends`: the projected D's knobs are not inherited."""
    vgg = experiment_settings(paper, "cifar10-uncond-d-vgg16").training.discriminator
    assert (vgg.type, vgg.ada_target, vgg.backbones, vgg.resolution, vgg.diffaug) == ("vgg16", 0.6, None, None, None)
    lpips = experiment_settings(paper, "cifar10-uncond-d-lpips").training.discriminator
    assert (lpips.type, lpips.ada_target) == ("lpips", 0.6)                     # common knobs carry over
    sg2 = experiment_settings(paper, "cifar10-uncond-d-sg2-pretrained").training.discriminator
    assert (sg2.channel_max, sg2.init, sg2.backbones) == (512, "stylegan2ada-cifar10", None)
    cd = experiment_settings(paper, "cifar10-uncond-cd").training
    assert cd.discriminator is None and cd.loss is None and cd.lr_d is None and cd.r1_gamma is None and cd.cd.N == 18
    assert experiment_settings(paper, "cifar10-uncond-d2o").training.cd is None
    edm = experiment_settings(paper, "imagenet64-edm")
    assert edm.training is None and edm.sampling.heun.num_steps == 40 and edm.sampling.method == "edm_heun"
    assert experiment_settings(paper, "cifar10-uncond-teacher-2-ms0.8").sampling.method == "multistep"
    for name in paper["experiments"]:
        assert isinstance(experiment_settings(paper, name), Experiment)


@pytest.mark.parametrize("where, keys, message", [
    ("cifar10-uncond-d-vgg16", {"discriminator": {"type": "vgg16", "resolution": 64}},
     r"experiments\.cifar10-uncond-d-vgg16\.discriminator\.resolution: discriminator type 'vgg16' does not use it"),
    ("cifar10-uncond-edm", {"lr_g": 1e-3}, r"experiments\.cifar10-uncond-edm\.lr_g: an edm_sampler experiment does not use it"),
    ("cifar10-uncond-cd", {"r1_gamma": 0.1}, r"experiments\.cifar10-uncond-cd\.r1_gamma: method 'cd' does not use it"),
    ("cifar10-uncond-d2o", {"cd": {"N": 4}}, r"experiments\.cifar10-uncond-d2o\.cd: method 'gan' does not use it"),
    ("cifar10-uncond-d2o", {"middle_sigma": 0.5}, r"middle_sigma: only a 2-step generator has a middle sigma"),
    ("cifar10-uncond-d2o", {"sampler": {"checkpoint": "edm-cifar10-uncond"}}, r"\.sampler: a train experiment does not use it"),
])
def test_a_knob_the_experiment_does_not_use_is_an_error(where, keys, message):
    cfg = raw(PAPER)
    cfg["experiments"][where].update(keys)
    with pytest.raises(ConfigError, match=message + r".*remove it"):
        validate(cfg, "x.yaml")


def _refused(edit, message):
    """A copy of the paper registry changed by `edit(cfg)` fails validation with `message` (a regex)."""
    cfg = raw(PAPER)
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        validate(cfg, "x.yaml")


def test_errors_name_the_link_that_wrote_the_key():
    """A typo under `defaults:` or `dataset_defaults:` is reported there, not on the first experiment."""
    _refused(lambda c: c["defaults"].update(lr_gg=1), r"x.yaml: defaults\.lr_gg: Additional properties")
    _refused(lambda c: c["dataset_defaults"]["cifar10"].update(loss={"kind": "nss"}),
             r"x.yaml: dataset_defaults\.cifar10\.loss\.kind: 'nss' is not one of")
    _refused(lambda c: c["dataset_defaults"]["cifar10"].update(batch_gpu=7),
             r"x.yaml: dataset_defaults\.cifar10\.batch_gpu: batch 256 is not a multiple")


def test_typed_settings_reject_hand_made_unused_knobs(paper):
    r = resolve_experiment(paper, "cifar10-uncond-d-vgg16")
    Experiment.from_resolved(r)
    with pytest.raises(SettingsError, match=r"experiments\.cifar10-uncond-d-vgg16\.discriminator\.cout: discriminator type "
                                            r"'vgg16' does not use it"):
        Experiment.from_resolved({**r, "discriminator": {**r["discriminator"], "cout": 64}})


def test_settings_parts_round_trip(paper):
    from d2o.settings import PARTS, Evaluation, Execution, Sampling, Training, from_dict

    e = experiment_settings(paper, "imagenet64-d2o-f")
    for part, cls in zip(PARTS, (Training, Execution, Sampling, Evaluation)):
        data = e.part(part)
        assert data["experiment"] == e.name and from_dict(cls, data[part]) == getattr(e, part)
    with pytest.raises(SettingsError, match=r"Training: unknown key\(s\) \['lr_gen'\]"):
        from_dict(Training, {**e.part("training")["training"], "lr_gen": 1})


def test_class_embedding_is_a_registry_weight_of_conditional_runs(paper):
    e = experiment_settings(paper, "imagenet64-d2o-f").training.discriminator
    assert e.class_embedding == "in-embedding-tf-efficientnet-lite0"
    assert paper["weights"]["in-embedding-tf-efficientnet-lite0"]["sha256"]            # pinned, not trust-on-first-use
    _refused(lambda c: c["experiments"]["afhqv2-d2o"].update(discriminator={"class_embedding": "in-embedding-tf-efficientnet-lite0"}),
             r"afhqv2-d2o\.discriminator\.class_embedding: an unconditional run has no class embedding")
    _refused(lambda c: c["experiments"]["imagenet64-d2o"].update(discriminator={"class_embedding": "in-embedding"}),
             r"class_embedding: unknown class-embedding weights entry 'in-embedding'; valid choices: in-embedding-tf-efficientnet-lite0")
