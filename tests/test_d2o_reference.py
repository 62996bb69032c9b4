"""Against D2O's own projected discriminator and losses (tests/fixtures/d2o_reference, made by running D2O's
`pg_modules` and `training/loss.py` with timm 0.5.4; see its README.md).

The project's `ProjectedDiscriminator` gets the fixture's weights (a pure function of D2O's state_dict names, mapped
from ours by `reference_name`) and inputs, then is compared on: the logits (real and fake), the G loss and its
gradient w.r.t. the fake images, the D loss and the heads' gradients, the R1 penalty (per sample and lazy-scaled
loss) and the heads' gradients of R1 - losses through d2o.gan_loss ('ns', 'sample_sum') and d2o.r1.r1_penalty.
float64 on both sides for everything (BatchNorm over a batch of 2 makes float32 gradients noisy); the float32 logits
and losses are compared too, with float32 tolerances.
"""

import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from d2o.gan_loss import discriminator_loss, generator_loss
from d2o.projected_discriminator import ProjectedDiscriminator
from d2o.r1 import r1_penalty

FIXTURES = Path(__file__).parent / "fixtures" / "d2o_reference"


@lru_cache(maxsize=None)
def maker():
    spec = importlib.util.spec_from_file_location("d2o_reference_maker", FIXTURES / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@lru_cache(maxsize=None)
def fixture(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def reference_name(name: str, D: ProjectedDiscriminator) -> str:
    """D2O's state_dict name (feature_net.* = ProjectedFeatureOnly, D.* = ProjectedDiscriminatorOnly) of our `name`."""
    m = re.fullmatch(r"projections\.([^.]+)\.(.+)", name)
    if m:
        bb, rest = m.groups()
        pre = f"feature_net.feature_networks.{bb}."
        if m2 := re.fullmatch(r"random\.0\.ccm\.(\d)\.(.+)", rest):
            return pre + f"scratch.layer{m2[1]}_ccm.{m2[2]}"
        if m2 := re.fullmatch(r"random\.0\.csm\.(\d)\.conv\.(.+)", rest):
            return pre + f"scratch.layer{m2[1]}_csm.out_conv.{m2[2]}"
        if m2 := re.fullmatch(r"features\.vit\.(.+)", rest):  # DeiT: the whole timm model
            return pre + f"pretrained.model.{m2[1]}"
        if m2 := re.fullmatch(r"random\.0\.readout\.(\d)\.(\d)\.(.+)", rest):  # after Slice, Transpose, Unflatten
            return pre + f"pretrained.layer{int(m2[1]) + 1}.{int(m2[2]) + 3}.{m2[3]}"
        if m2 := re.fullmatch(r"features\.layers\.(\d)\.(\d+)\.(.+)", rest):
            k, j, tail = int(m2[1]), int(m2[2]), m2[3]
            if bb == "vgg16_bn":  # D2O wraps each features slice in another Sequential
                return pre + f"pretrained.layer{k}.0.{j}.{tail}"
            n_stem = len(D.projections[bb].features.layers[0]) - 2  # D2O: conv_stem, bn1, act1 (timm 0.5.4)
            if k == 0 and j >= n_stem:
                j += 3 - n_stem
            return pre + f"pretrained.layer{k}.{j}.{tail}"
    m = re.fullmatch(r"discriminators\.([^.]+)\.heads\.(\d)\.(.+)", name)
    if m:
        bb, i, rest = m.groups()
        pre = f"D.discriminators.{bb}.mini_discs.{i}."
        if m2 := re.fullmatch(r"main\.(\d)\.(\d)\.(.+)", rest):
            return pre + f"main.{m2[1]}.main.{m2[2]}.{m2[3]}"
        if m2 := re.fullmatch(r"cls\.(.+)", rest):  # unconditional: the last entry of D2O's `main`
            head = D.discriminators[bb].heads[int(i)]
            return pre + (f"cls.{m2[1]}" if head.label_dim else f"main.{head.num_down}.{m2[1]}")
        if rest.startswith(("embed.", "embed_proj.")):
            return pre + rest
    raise KeyError(f"no D2O name for {name}")


def build(name: str, dtype=torch.float64):
    cfg = maker().CONFIGS[name]
    D = ProjectedDiscriminator(cfg["backbones"], label_dim=cfg["c_dim"], pretrained=False).to(dtype)
    persistent = set(D.state_dict())
    name_of = lambda n: reference_name(n, D) if n in persistent else None  # noqa: E731 (non-persistent norm stats)
    maker().deterministic_init(D, name_of)
    ref = fixture(name)
    real, fake = (maker().pixels(torch.from_numpy(ref[k]), dtype) for k in ("x_real_u8", "x_fake_u8"))
    c = torch.from_numpy(ref["c"]).to(dtype) if cfg["c_dim"] else None
    return D.train(), name_of, real, fake, c, ref


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def logits_rows(logits, k):
    return torch.cat([t.detach() for t in logits[k]], dim=1).double().numpy()


def grad_error(ref: dict, key: str, grads: dict) -> float:
    """Largest error of our gradients against the fixture's summaries, relative to each tensor's gradient norm
    (floored at 1e-6 of the largest norm: some gradients are zero up to rounding, e.g. conv biases before BN)."""
    mk = maker()
    names = [str(n) for n in ref[f"{key}_grad_names"]]
    assert set(names) == set(grads), set(names) ^ set(grads)
    ours = mk.grad_summary(names, [grads[n] for n in names])
    want = ref[f"{key}_grad_stats"]
    norms = np.sqrt(want[:, 1])
    scale = np.maximum(norms, 1e-6 * norms.max())
    numel = np.array([grads[n].numel() for n in names], dtype=np.float64)
    errs = [np.abs(ours["stats"][:, 0] - want[:, 0]) / (scale * np.sqrt(numel)),
            np.abs(np.sqrt(ours["stats"][:, 1]) - norms) / scale,
            (np.abs(ours["stats"][:, 2:] - want[:, 2:]) / scale[:, None]).max(axis=1)]
    assert [str(n) for n in ours["small_names"]] == [str(n) for n in ref[f"{key}_grad_small_names"]]
    if len(ours["small_names"]):
        small_scale = np.concatenate([np.full(grads[str(n)].numel(), scale[names.index(str(n))])
                                      for n in ours["small_names"]])
        errs.append(np.abs(ours["small"] - ref[f"{key}_grad_small"]) / small_scale)
    return float(max(e.max() for e in errs))


def head_grads(D, name_of) -> dict:
    return {name_of(f"discriminators.{n}"): (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
            for n, p in D.discriminators.named_parameters()}


def run_stages(name: str, dtype, with_grads: bool) -> dict:
    """Our side of make_reference._run: the same passes, each from reset spectral-norm vectors / BN statistics."""
    D, name_of, real, fake, c, ref = build(name, dtype)
    reset = lambda: maker().reset_buffers(D, name_of)  # noqa: E731
    out = {}
    with torch.no_grad():
        for key, x in (("real", real), ("fake", fake)):
            reset()
            logits = D(x, c)
            for k in range(len(D.backbones)):
                out[f"logits_{key}_{k}"] = logits_rows(logits, k)
    reset()
    x = fake.clone().requires_grad_(with_grads)
    loss = generator_loss(D(x, c), "ns", "sample_sum")
    out["g_loss"] = loss.item()
    if with_grads:
        loss.backward()
        out["g_grads"] = {"x_fake": x.grad}
    D.zero_grad(set_to_none=True)
    reset()
    lf, lr = D.forward_pair(fake, c, real, c)  # D2O's D step scores the fakes first, then the reals
    loss = discriminator_loss(lr, lf, "ns", "sample_sum")
    out["d_loss"] = loss.item()
    if with_grads:
        loss.backward()
        out["d_grads"] = head_grads(D, name_of)
    D.zero_grad(set_to_none=True)
    reset()
    loss, sq = r1_penalty(D, real, c, gamma=maker().GAMMA, interval=maker().R1_INTERVAL)
    out["r1_loss"], out["r1_penalty"] = loss.item(), sq.detach().double().numpy()
    if with_grads:
        loss.backward()
        out["r1_grads"] = head_grads(D, name_of)
    return out


CONFIGS = ["cifar10_uncond", "cifar10_cond", "imagenet_cond"]


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_maps_onto_d2os(name):
    """Every tensor of D2O's feature network and discriminator has one counterpart here, of the same shape."""
    D, name_of, *_ , ref = build(name, torch.float32)
    sd = D.state_dict()
    mapped = {name_of(k): tuple(v.shape) for k, v in sd.items()}
    assert len(mapped) == len(sd)
    theirs = dict(zip([str(n) for n in ref["sd_names"]], map(tuple, json.loads(str(ref["sd_shapes"])))))
    assert mapped == theirs
    cfg = json.loads(str(ref["config"]))
    assert cfg["timm"] == "0.5.4" and cfg["gamma"] == maker().GAMMA and cfg["r1_interval"] == maker().R1_INTERVAL


def _check(name: str, out: dict, prefix: str, tol: dict) -> dict:
    ref, errs = fixture(name), {}
    nb = len(maker().CONFIGS[name]["backbones"])
    errs["logits"] = max(rel(out[f"logits_{s}_{k}"], ref[f"{prefix}logits_{s}_{k}"])
                         for s in ("real", "fake") for k in range(nb))
    for key in ("g_loss", "d_loss", "r1_loss"):
        errs[key] = rel(out[key], ref[f"{prefix}{key}"])
    errs["r1_penalty"] = rel(out["r1_penalty"], ref[f"{prefix}r1_penalty"])
    for key in ("g", "d", "r1"):
        if f"{key}_grads" in out:
            errs[f"{key}_grads"] = grad_error(ref, key, out[f"{key}_grads"])
    print(f"\n{name} {prefix or 'f64_'}max relative differences:", {k: f"{v:.1e}" for k, v in errs.items()})
    bad = {k: v for k, v in errs.items() if not v <= tol.get(k, tol["default"])}
    assert not bad, f"{name}: differences above tolerance {tol}: {bad}"
    return errs


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_float64_matches_d2o(name):
    """Logits, losses, R1 and head gradients in float64 (d2o.gan_loss and d2o.r1 evaluate the losses in float32:
    that bounds the agreement at ~1e-7 relative)."""
    _check(name, run_stages(name, torch.float64, with_grads=True), "", dict(default=1e-6, logits=1e-10))


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_matches_d2o(name):
    """The same in float32, values only. Tolerances from the float32 vs float64 spread of D2O's own code (logits 8e-5,
    losses 3e-6, R1 through BatchNorm over 2 samples 2.4e-3), for CPUs whose kernels round differently."""
    _check(name, run_stages(name, torch.float32, with_grads=False), "f32_",
           dict(default=1e-4, logits=1e-3, r1_loss=2e-2, r1_penalty=2e-2))
