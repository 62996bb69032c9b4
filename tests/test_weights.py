"""Registry weights (d2o.weights): upstream files converted without running code from them (names and shapes checked
against the installed libraries' architectures), the networks and metric extractors built from the converted files,
jobs that may not fetch weights from a hub, files put into place by hand verified where they are consumed."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

import helpers_fidelity
from d2o import metrics as M
from d2o.config import ConfigError, load_config, validate
from d2o.download import ChecksumError, DownloadError, VALIDATORS, read_lock, sha256_file, verify_file
from d2o.feature_networks import build_feature_network
from d2o.weights import HUB_OFF, WeightsError, convert_weight, read_state_dict, training_weights, weights_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """timm 0.5.4's release format of tf_efficientnet_lite0: a plain state dict (random weights)."""
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path_factory.mktemp("w") / "tf_efficientnet_lite0-0aa007d2.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_a_timm_state_dict_converts_and_builds_the_feature_network(lite0, tmp_path):
    src, state = lite0
    meta = convert_weight("tf_efficientnet_lite0", "timm", src, tmp_path / "w.safetensors")
    assert meta["network"] == "tf_efficientnet_lite0" and meta["source_sha256"] == sha256_file(src)
    got = read_state_dict(tmp_path / "w.safetensors", "tf_efficientnet_lite0")
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    net = build_feature_network("tf_efficientnet_lite0", pretrained=True, weights=tmp_path / "w.safetensors")
    assert torch.equal(net.layers[0][0].weight, state["conv_stem.weight"])
    assert weights_record([tmp_path / "w.safetensors"]) == {"tf_efficientnet_lite0": sha256_file(src)}
    with pytest.raises(WeightsError, match="holds the weights of 'tf_efficientnet_lite0', not of 'vgg16_bn'"):
        read_state_dict(tmp_path / "w.safetensors", "vgg16_bn")


def test_deits_checkpoint_wrapper_is_unwrapped(lite0, tmp_path):
    """facebookresearch/deit's files hold {"model": state_dict} (the format of the DeiT-B download)."""
    src, state = lite0
    torch.save({"model": state, "epoch": torch.tensor(300)}, tmp_path / "wrapped.pth")
    convert_weight("tf_efficientnet_lite0", "timm", tmp_path / "wrapped.pth", tmp_path / "w.safetensors")
    assert read_state_dict(tmp_path / "w.safetensors", "tf_efficientnet_lite0").keys() == state.keys()


def test_another_networks_weights_are_refused_naming_the_file(lite0, tmp_path):
    src, _ = lite0
    with pytest.raises(WeightsError, match=rf"{src}: not the weights of 'deit_base_distilled_patch16_224'"):
        convert_weight("deit_base_distilled_patch16_224", "timm", src, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="named after the network"):
        convert_weight("my-lite0", "timm", src, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    payload = _Payload()
    payload.target = str(tmp_path / "pwned")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv_stem.weight": payload}, f)
    with pytest.raises(WeightsError, match=r"evil.pth: not a plain PyTorch state dict"):
        convert_weight("tf_efficientnet_lite0", "timm", tmp_path / "evil.pth", tmp_path / "w.safetensors")
    with pytest.raises(Exception):
        VALIDATORS["timm"](tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_inception_from_a_converted_file_is_torch_fidelitys(tmp_path):
    pth = helpers_fidelity.make_random_inception_weights(tmp_path)
    convert_weight("inception-v3-compat", "torch-fidelity-inception", pth, tmp_path / "inception.safetensors")
    imgs = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    a = M.extract_features(imgs, weights_path=pth, device="cpu", batch_size=4)["2048"]
    b = M.extract_features(imgs, weights_path=tmp_path / "inception.safetensors", device="cpu", batch_size=4)["2048"]
    assert torch.equal(a, b) and a.abs().sum() > 0


def test_clip_from_a_converted_archive_is_torch_fidelitys_without_loading_the_archive(tmp_path, monkeypatch):
    """The TorchScript archive is read by d2o.torchscript_weights, never torch.jit.load'ed; the converted file keeps
    the image tower, and CLIP features equal torch-fidelity's from the archive."""
    archive = helpers_fidelity.make_tiny_clip(tmp_path)
    imgs = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    a = M.extract_features(imgs, "clip-vit-b-32", ("clip",), weights_path=archive, device="cpu")["clip"]

    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load called")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    convert_weight("clip-vit-b-32", "clip-torchscript", archive, tmp_path / "clip.safetensors")
    assert all(k.startswith("visual.") or k == "text_projection" for k in read_state_dict(tmp_path / "clip.safetensors", "clip-vit-b-32"))
    b = M.extract_features(imgs, "clip-vit-b-32", ("clip",), weights_path=tmp_path / "clip.safetensors", device="cpu")["clip"]
    assert torch.equal(a, b)


def test_jobs_may_not_fetch_weights_from_a_hub(monkeypatch):
    """Inside DAG jobs (HUB_OFF, set by rules/common.smk) a network asked for pretrained weights without a file fails
    at once naming the registry key to add, instead of trying the network."""
    monkeypatch.setenv(HUB_OFF, "1")
    with pytest.raises(WeightsError, match=r"'tf_efficientnet_lite0' needs pretrained weights .* add `weights.tf_efficientnet_lite0`"):
        build_feature_network("tf_efficientnet_lite0", pretrained=True)
    with pytest.raises(WeightsError, match="add `weights.inception-v3-compat`"):
        M.extract_features(np.zeros((1, 8, 8, 3), np.uint8), device="cpu")
    with pytest.raises(WeightsError, match="add `weights.clip-vit-b-32`"):
        M.extract_features(np.zeros((1, 8, 8, 3), np.uint8), "clip-vit-b-32", ("clip",), device="cpu")
    from d2o.cd import build_lpips
    with pytest.raises(WeightsError, match="add `weights.vgg16`"):
        build_lpips(offline=False)
    build_feature_network("tf_efficientnet_lite0", pretrained=False)  # random init needs nothing


def test_what_each_run_reads():
    cfg = load_config(REPO / "config/config.yaml")
    from d2o.config import experiment_settings
    reads = {n: training_weights(experiment_settings(cfg, n).training) for n in
             ("cifar10-uncond-d2o", "cifar10-cond-d2o-f", "afhqv2-d2o", "imagenet64-d2o-f", "cifar10-uncond-d-lpips",
              "cifar10-uncond-d-sg2-scratch", "cifar10-uncond-cd-f", "cifar10-uncond-d2o-cd")}
    assert reads == {"cifar10-uncond-d2o": ("vgg16_bn", "tf_efficientnet_lite0"),
                     "cifar10-cond-d2o-f": ("vgg16_bn", "tf_efficientnet_lite0", "in-embedding-tf-efficientnet-lite0"),
                     "afhqv2-d2o": ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0"),
                     "imagenet64-d2o-f": ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0",
                                          "in-embedding-tf-efficientnet-lite0"),
                     "cifar10-uncond-d-lpips": ("vgg16",), "cifar10-uncond-d-sg2-scratch": (),
                     "cifar10-uncond-cd-f": ("vgg16",),
                     "cifar10-uncond-d2o-cd": ("vgg16_bn", "tf_efficientnet_lite0", "vgg16")}
    demo = load_config(REPO / "config/demo.yaml")          # offline: only the backbone the DAG trains itself
    assert {n: training_weights(experiment_settings(demo, n).training) for n in ("demo-d2o", "demo-d-stylegan2")} == \
        {"demo-d2o": ("demo-cnn",), "demo-d-stylegan2": ()}


def test_a_weight_the_runs_read_must_be_in_the_registry():
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    del cfg["weights"]["deit_base_distilled_patch16_224"]
    with pytest.raises(ConfigError, match=r"experiments.afhqv2-d2o reads the pretrained weights of "
                                          r"'deit_base_distilled_patch16_224', which the registry does not declare: add weights"):
        validate(cfg, "x.yaml")
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["weights"]["vgg-16"] = cfg["weights"].pop("vgg16")
    with pytest.raises(ConfigError, match="weights.vgg-16: an entry of kind torchvision is named after the network"):
        validate(cfg, "x.yaml")


def test_a_file_put_into_place_by_hand_is_verified_where_it_is_read(lite0, tmp_path):
    """A pre-staged copy is checked like a download: first use pins its hash (after its content parses), a later
    different file is refused naming it, the expected hash and the fix, and is moved aside."""
    src, state = lite0
    staged, lock = tmp_path / "staged.pth", tmp_path / "lock.yaml"
    staged.write_bytes(src.read_bytes())
    verify_file(staged, None, lock, "weights:lite0", VALIDATORS["timm"])
    assert read_lock(lock)["weights:lite0"]["sha256"] == sha256_file(src)
    torch.save({k: v + 1 for k, v in state.items() if v.is_floating_point()}, staged)
    with pytest.raises(ChecksumError, match=rf"{staged}: SHA-256 mismatch: expected {sha256_file(src)} \(lock file"):
        verify_file(staged, None, lock, "weights:lite0", VALIDATORS["timm"])
    assert not staged.exists() and list(tmp_path.glob("staged.pth.bad-*"))
    (tmp_path / "html.pth").write_text("<html>login</html>")                     # never pinned
    with pytest.raises(DownloadError, match="not what the registry names"):
        verify_file(tmp_path / "html.pth", None, lock, "weights:other", VALIDATORS["timm"])
    assert "weights:other" not in read_lock(lock)
    (tmp_path / "x").write_bytes(b"abc")
    with pytest.raises(ChecksumError, match="expected 0000.* \\(sha256 in the registry\\)"):
        verify_file(tmp_path / "x", "0" * 64)


def test_a_dry_run_of_table4_downloads_every_weight_its_jobs_read():
    out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "results/tables/table4.tex", "-n", "-p", "--cores", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    downloads = {line.split("resources/downloads/weights/")[1].strip() for line in out.stdout.splitlines()
                 if "output: resources/downloads/weights/" in line}
    assert downloads == {"vgg16_bn", "tf_efficientnet_lite0", "in-embedding-tf-efficientnet-lite0",
                         "inception-v3-compat", "clip-vit-b-32"}
    assert "--weights resources/weights/vgg16_bn.safetensors --weights resources/weights/tf_efficientnet_lite0.safetensors" in out.stdout
