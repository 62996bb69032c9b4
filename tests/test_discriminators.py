"""Discriminator side of D2O: feature networks, projected discriminator, Table 1 discriminators, DiffAugment, R1."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from d2o.diffaug import diff_augment, rand_cutout, rand_translation
from d2o.discriminators import build_discriminator
from d2o.stylegan2_discriminator import StyleGAN2Discriminator, minibatch_std
from d2o.feature_networks import build_feature_network
from d2o.projected_discriminator import MiniDiscriminator, ProjectedDiscriminator
from d2o.r1 import lazy_adam_params, r1_penalty, sanitize_grads


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convs on a shared 2-core machine: OpenMP oversubscription makes 2 threads up to 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class OpNames(TorchDispatchMode):
    """Records the names of the ATen operators that compute (views excluded), in call order."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def shapes(logits):
    return [[tuple(t.shape) for t in heads] for heads in logits]


@pytest.fixture(scope="module")
def cifar_d():
    torch.manual_seed(0)
    return ProjectedDiscriminator(["vgg16_bn", "tf_efficientnet_lite0"], pretrained=False, label_dim=10)


def test_real_backbone_taps_at_224():
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        vgg = build_feature_network("vgg16_bn", pretrained=False)(x)
        eff = build_feature_network("tf_efficientnet_lite0", pretrained=False)(x)
    assert [tuple(t.shape[1:]) for t in vgg] == [(128, 112, 112), (256, 56, 56), (512, 28, 28), (512, 14, 14)]
    assert [tuple(t.shape[1:]) for t in eff] == [(24, 56, 56), (40, 28, 28), (112, 14, 14), (320, 7, 7)]


@pytest.mark.parametrize("name", ["vgg16_bn", "tf_efficientnet_lite0"])
def test_feature_networks_copy_no_activations_when_the_image_needs_a_gradient(name):
    """The G step backpropagates through the frozen networks to the image: no op may copy an activation first (timm's
    in-place ReLU6 did, once per block)."""
    net = build_feature_network(name, pretrained=False)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    with OpNames() as ops:
        outs = net(x)
    assert not {"aten.clone", "aten.copy_"} & set(ops.names)
    sum(o.sum() for o in outs).backward()
    assert x.grad.abs().sum() > 0


def test_cifar_discriminator_logit_maps(cifar_d):
    D = cifar_d
    assert [[h.num_down for h in D.discriminators[n].heads] for n in D.backbones] == [[4, 3, 2, 1]] * 2
    x, c = torch.rand(1, 3, 32, 32) * 2 - 1, F.one_hot(torch.tensor([3]), 10).float()
    # Projection output: cout x (1, 1, 2, 4) channels at twice the tap resolution (spec §3.2).
    feats = D.projections["tf_efficientnet_lite0"](D.preprocess(x, "tf_efficientnet_lite0"))
    assert [tuple(t.shape[1:]) for t in feats] == [(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14)]
    with torch.no_grad():
        logits = D(x, c)
    assert shapes(logits) == [[(1, 121)] * 4, [(1, 16)] * 4]  # VGG 11x11, EfficientNet 4x4 (spec §3.3)


def test_frozen_parts_get_no_grads(cifar_d):
    D = cifar_d.train()
    assert all(not m.training for m in D.projections.modules())
    assert all(m.training for m in D.discriminators.modules())
    trainable = {id(p) for p in D.trainable_parameters()}
    frozen = list(D.projections.parameters())
    assert frozen and not any(p.requires_grad or id(p) in trainable for p in frozen)
    assert trainable == {id(p) for p in D.discriminators.parameters()}
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    c = F.one_hot(torch.tensor([1, 7]), 10).float()
    sum(t.sum() for heads in D(x, c) for t in heads).backward()
    assert all(p.grad is None for p in frozen)
    assert x.grad is not None and x.grad.abs().sum() > 0  # G gets gradients through the frozen networks
    assert all(p.grad is not None for p in D.discriminators.parameters() if p.requires_grad
               and not any(p is h.embed.weight for d in D.discriminators.values() for h in d.heads))


def test_conditional_head_math():
    torch.manual_seed(1)
    head = MiniDiscriminator(cin=8, start_sz=16, end_sz=8, label_dim=5, cmap_dim=4).eval()
    x = torch.randn(3, 8, 20, 20)
    labels = torch.tensor([0, 4, 2])
    c = F.one_hot(labels, 5).float()
    out = head(x, c)
    h = head.cls(head.main(x))                                            # (3, 4, 7, 7)
    e = head.embed.weight[labels]                                         # (3, 320)
    w = head.embed_proj.weight / math.sqrt(320)
    cmap = F.leaky_relu(e @ w.T + head.embed_proj.bias, 0.2) * math.sqrt(2)
    expected = (h * cmap[:, :, None, None]).sum(1).flatten(1) / 2.0      # / sqrt(cmap_dim = 4)
    assert out.shape == (3, 49)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_tiny_backbone_fast_forward_backward():
    torch.manual_seed(0)
    D = ProjectedDiscriminator(["tiny"], pretrained=False, img_resolution=16, cout=16, label_dim=3)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    c = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    logits = D(x, c)
    assert shapes(logits) == [[(4, 4)] * 4]
    sum(t.sum() for t in logits[0]).backward()
    assert all(p.grad is not None for p in D.trainable_parameters() if p.dim() > 1 and p.shape[0] != 1000)
    with pytest.raises(ValueError, match="img_resolution"):
        ProjectedDiscriminator(["tiny"], pretrained=False)
    with pytest.raises(ValueError, match="one-hot"):
        D(x, None)


def test_diffaug_in_projected_discriminator_is_random():
    torch.manual_seed(0)
    D = ProjectedDiscriminator(["tiny"], pretrained=False, img_resolution=16, cout=8, diffaug=True).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a, b = D(x, None)[0][0], D(x, None)[0][0]
    assert not torch.allclose(a, b)


@pytest.mark.slow
def test_deit_backbone_logit_maps():
    D = ProjectedDiscriminator(["deit_base_distilled_patch16_224", "tf_efficientnet_lite0"], pretrained=False)
    with torch.no_grad():
        assert shapes(D(torch.rand(1, 3, 64, 64) * 2 - 1, None)) == [[(1, 16)] * 4, [(1, 16)] * 4]


def test_table1_discriminators():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    c = F.one_hot(torch.arange(4), 10).float()
    assert shapes(build_discriminator({"type": "vgg16"}, 32, 0, pretrained=False)(x)) == [[(4, 1)]]
    lp = build_discriminator({"type": "lpips"}, 32, 0, pretrained=False)
    assert shapes(lp(x)) == [[(4, 1024), (4, 256), (4, 64), (4, 16), (4, 4)]]
    assert all(not p.requires_grad for p in lp.features.parameters())
    sg = build_discriminator({"type": "stylegan2"}, 32, 10, pretrained=False)
    assert shapes(sg(x, c)) == [[(4, 1)]]
    assert sg.b32.conv0.weight.shape == (512, 512, 3, 3) and sg.mapping.fc7.weight.shape == (512, 512)
    with pytest.raises(ValueError, match="'type'"):
        build_discriminator({"type": "biggan"}, 32, 0)


def test_stylegan2_loads_state_dict(tmp_path):
    torch.manual_seed(0)
    a = build_discriminator({"type": "stylegan2"}, 8, 0)
    path = tmp_path / "d.pt"
    torch.save(a.state_dict(), path)
    torch.manual_seed(1)
    b = build_discriminator({"type": "stylegan2", "weights": str(path)}, 8, 0)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(a(x)[0][0], b(x)[0][0])


def _stylegan2ada_fixture(tmp_path, label_dim=3, **overrides):
    """A StyleGAN2-ADA-format training pickle whose D (CIFAR-10 configuration, shrunk) has random weights and biases."""
    from helpers_edm_pickle import write_stylegan2ada_pickle

    torch.manual_seed(0)
    D = StyleGAN2Discriminator(8, label_dim=label_dim, channel_base=256, channel_max=32, conv_clamp=256,
                               mbstd_group_size=2, architecture="orig", mapping_layers=2)
    with torch.no_grad():
        for p in D.parameters():
            p.add_(0.1 * torch.randn_like(p))
    kwargs = dict(c_dim=label_dim, img_resolution=8, img_channels=3, architecture="orig", channel_base=256,
                  channel_max=32, num_fp16_res=4, conv_clamp=256, block_kwargs={"freeze_layers": 0},
                  mapping_kwargs={"num_layers": 2}, epilogue_kwargs={"mbstd_group_size": 2})
    kwargs.update(overrides)
    return D, write_stylegan2ada_pickle(tmp_path / "sg2ada.pkl", D, kwargs)


def test_stylegan2ada_checkpoint_converts_and_loads(tmp_path):
    """Table 1 'StyleGAN2 (Pre-trained)': StyleGAN2-ADA's D is read without running code from the pickle, converted,
    and computes the same logits; an unconditional experiment drops the label mapping and re-initialises b4.out."""
    from d2o.stylegan2ada_checkpoint import convert_stylegan2ada_discriminator, load_stylegan2_checkpoint

    D, pkl = _stylegan2ada_fixture(tmp_path)
    dst = convert_stylegan2ada_discriminator(pkl, tmp_path / "d.safetensors", extra={"sha256": "x"})
    x, c = torch.randn(4, 3, 8, 8), F.one_hot(torch.tensor([0, 2, 1, 2]), 3).float()
    cond = load_stylegan2_checkpoint(dst, 8, 3, channel_max=32)
    assert cond.reinitialised == [] and cond.d2o_extra["source_init_kwargs"]["num_fp16_res"] == 4
    assert torch.equal(cond(x, c)[0][0], D(x, c)[0][0])
    uncond = load_stylegan2_checkpoint(dst, 8, 0)
    assert uncond.reinitialised == ["b4.out.bias", "b4.out.weight"] and not hasattr(uncond, "mapping")
    kept = {k: v for k, v in D.state_dict().items() if not k.startswith(("mapping.", "b4.out."))}
    assert all(torch.equal(uncond.state_dict()[k], v) for k, v in kept.items())
    assert uncond(x)[0][0].shape == (4, 1)
    built = build_discriminator({"type": "stylegan2", "channel_max": 32, "checkpoint": str(dst)}, 8, 0)
    assert built.reinitialised == uncond.reinitialised
    with pytest.raises(ValueError, match=r"d.safetensors: the checkpoint's discriminator has channel_max=32, the "
                                         r"experiment 512; change discriminator.channel_max"):
        build_discriminator({"type": "stylegan2", "channel_max": 512, "checkpoint": str(dst)}, 8, 0)
    with pytest.raises(ValueError, match="takes 8 px images, the experiment's dataset has 16 px"):
        load_stylegan2_checkpoint(dst, 16, 0)
    with pytest.raises(ValueError, match="has 3 classes, the experiment 10"):
        load_stylegan2_checkpoint(dst, 8, 10)


@pytest.mark.parametrize("name", ["cifar_like", "resnet", "tf_converted"])
def test_stylegan2ada_checkpoint_computes_stylegan2adas_logits(tmp_path, name):
    """Against StyleGAN2-ADA's own Discriminator (tests/fixtures/stylegan2ada_reference, made by running its code):
    same state_dict names and shapes, and the same logits after a pickle in its format goes through the converter."""
    import importlib.util
    import json
    from pathlib import Path

    from d2o.stylegan2ada_checkpoint import _stylegan2ada_kwargs, convert_stylegan2ada_discriminator, load_stylegan2_checkpoint
    from helpers_edm_pickle import write_stylegan2ada_pickle

    folder = Path(__file__).parent / "fixtures" / "stylegan2ada_reference"
    spec = importlib.util.spec_from_file_location("sg2ada_reference_maker", folder / "make_reference.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    fx = np.load(folder / f"{name}.npz")
    sg2ada_kwargs = json.loads(str(fx["config"]))
    assert sg2ada_kwargs == maker.CONFIGS[name], "CONFIGS changed since the fixture was made: rerun make_reference.py"
    ours = maker.deterministic_init(StyleGAN2Discriminator(**_stylegan2ada_kwargs(sg2ada_kwargs, name)))
    sd = ours.state_dict()
    assert sorted(sd) == list(fx["sd_names"]) and [list(sd[k].shape) for k in sorted(sd)] == json.loads(str(fx["sd_shapes"]))
    pkl = write_stylegan2ada_pickle(tmp_path / "D.pkl", ours, sg2ada_kwargs)
    D = load_stylegan2_checkpoint(convert_stylegan2ada_discriminator(pkl, tmp_path / "D.safetensors"), 16,
                                  sg2ada_kwargs["c_dim"])
    x, c = torch.from_numpy(fx["x"]), torch.from_numpy(fx["c"]) if sg2ada_kwargs["c_dim"] else None
    with torch.no_grad():
        logits = D(x, c)[0][0]
    ref = torch.from_numpy(fx["logits"])
    assert (logits - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_stylegan2ada_checkpoint_refuses_what_it_does_not_model(tmp_path):
    from d2o.stylegan2ada_checkpoint import convert_stylegan2ada_discriminator
    from d2o.edm.persistence import EDMPickleError
    from helpers_edm_pickle import write_edm_pickle

    _, pkl = _stylegan2ada_fixture(tmp_path, epilogue_kwargs={"mbstd_group_size": None})
    with pytest.raises(ValueError, match=r"sg2ada.pkl: D: minibatch-std over the entire minibatch"):
        convert_stylegan2ada_discriminator(pkl, tmp_path / "d.safetensors")
    _, pkl = _stylegan2ada_fixture(tmp_path, block_kwargs={"activation": "relu"})
    with pytest.raises(ValueError, match=r"activation='relu' \(only 'lrelu'\)"):
        convert_stylegan2ada_discriminator(pkl, tmp_path / "d.safetensors")
    edm = write_edm_pickle(tmp_path / "edm.pkl", "Linear", {}, torch.nn.Linear(2, 2).state_dict(), module=torch.nn.Linear(2, 2))
    with pytest.raises(EDMPickleError, match=r"edm.pkl: no StyleGAN2-ADA discriminator under key 'D'"):
        convert_stylegan2ada_discriminator(edm, tmp_path / "d.safetensors")
    assert not (tmp_path / "d.safetensors").exists()


def test_stylegan2_downsampling_and_mbstd():
    # 1x1 skip of a constant image stays constant away from the zero-padded border (normalised FIR filter).
    sg = build_discriminator({"type": "stylegan2"}, 16, 0)
    conv = sg.b16.skip
    with torch.no_grad():
        conv.weight.fill_(1.0)
        y = conv(torch.ones(1, 512, 16, 16))
    assert y.shape == (1, 512, 8, 8)
    torch.testing.assert_close(y[0, 0, 1:-1, 1:-1], torch.full((6, 6), 512 / math.sqrt(512)))
    x = torch.randn(8, 6, 4, 4)
    out = minibatch_std(x, group_size=4)
    g = x.reshape(4, 2, 6, 4, 4)
    std = (g.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # per group-slot
    torch.testing.assert_close(out[:, 6, 0, 0], std.repeat(4))


def test_r1_matches_direct_autograd():
    torch.manual_seed(0)
    w = torch.randn(3, 5, 5)

    def toy_d(x, c):
        h = torch.tanh(x * w)
        return [[h.flatten(1), (h ** 2).mean(dim=[1, 2, 3])[:, None]], [h[:, :1].flatten(1) * 3]]

    real = torch.randn(4, 3, 5, 5)
    loss, sq = r1_penalty(toy_d, real, None, gamma=1e-3, interval=16)
    xr = real.clone().requires_grad_(True)
    out = toy_d(xr, None)
    total = out[0][0].sum() + out[0][1].sum() + out[1][0].sum()
    (g,) = torch.autograd.grad(total, xr)
    expected_sq = g.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(sq, expected_sq)
    torch.testing.assert_close(loss, expected_sq.mean() * 1e-3 / 2 * 16)
    assert loss.requires_grad  # create_graph: the penalty can be backpropagated into D


def test_r1_on_projected_discriminator_backprops_into_heads():
    torch.manual_seed(0)
    D = ProjectedDiscriminator(["tiny"], pretrained=False, img_resolution=16, cout=8)
    loss, sq = r1_penalty(D, torch.rand(2, 3, 16, 16) * 2 - 1, None, gamma=1e-4, interval=16)
    loss.backward()
    assert sq.shape == (2,) and (sq > 0).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.trainable_parameters())


def test_lazy_adam_params_and_sanitize():
    lr, betas = lazy_adam_params(1e-4, (0.0, 0.99), 16)
    assert lr == pytest.approx(1e-4 * 16 / 17) and betas[0] == 0.0
    assert betas[1] == pytest.approx(0.990585, abs=1e-6)
    assert lazy_adam_params(1e-4, (0.0, 0.99), 0) == (1e-4, (0.0, 0.99))
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0])
    sanitize_grads([p, torch.nn.Parameter(torch.zeros(1))])
    assert p.grad.tolist() == [0.0, 1e5, -1e5, 2.0]


def test_sanitize_grads_is_per_tensor_nan_to_num_in_a_few_kernels():
    """One flat buffer: bitwise what per-tensor nan_to_num gives, for channels_last, sliced (non-dense) and float64
    gradients, with the reduce hook seeing every value once; the dense ones cost 3 operators in all."""
    gen = torch.Generator().manual_seed(0)

    def grad(*shape, dtype=torch.float32):
        g = torch.randn(*shape, generator=gen, dtype=dtype) * 1e6
        g.view(-1)[::7] = float("nan")
        g.view(-1)[1::11] = float("inf")
        g.view(-1)[2::13] = -float("inf")
        return g

    params = [torch.nn.Parameter(torch.zeros(s)) for s in [(8, 3, 3, 3), (8,), (5, 4)]]
    params.append(torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)))
    params[0].grad = grad(8, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    params[1].grad = grad(8)
    params[2].grad = grad(5, 8)[:, ::2]                          # not one dense block
    params[3].grad = grad(2, dtype=torch.float64)
    params.append(torch.nn.Parameter(torch.zeros(3)))            # no grad: left alone
    expect = [torch.nan_to_num(p.grad * 2, nan=0.0, posinf=1e5, neginf=-1e5) for p in params[:4]]
    seen = []

    def double(flat):
        seen.append(flat.numel())
        flat.mul_(2)

    sanitize_grads(params, reduce=double)
    assert all(torch.equal(p.grad, e) for p, e in zip(params, expect)) and params[4].grad is None
    assert params[0].grad.is_contiguous(memory_format=torch.channels_last)
    assert sorted(seen) == [2, 20, 8 * 27 + 8]                   # sliced one alone, float64 apart, the rest together

    dense = [torch.nn.Parameter(torch.zeros(4, 4)) for _ in range(50)]
    for q in dense:
        q.grad = grad(4, 4)
    with OpNames() as ops:
        sanitize_grads(dense)
    assert ops.names == ["aten.cat", "aten.nan_to_num", "aten._foreach_copy_"]


def test_diffaug_shape_determinism_and_semantics():
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    a = diff_augment(x, generator=torch.Generator().manual_seed(3))
    b = diff_augment(x, generator=torch.Generator().manual_seed(3))
    c = diff_augment(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(diff_augment(x, policy=""), x)
    with pytest.raises(ValueError, match="policy"):
        diff_augment(x, policy="flip")
    # Translation: each sample is an integer shift with zero fill, |shift| <= int(16 * 0.125 + 0.5) = 2.
    t = rand_translation(x, generator=torch.Generator().manual_seed(0))
    pad = F.pad(x, [2, 2, 2, 2])
    for i in range(5):
        assert any(torch.equal(t[i], pad[i, :, 2 + dy:18 + dy, 2 + dx:18 + dx])
                   for dy in range(-2, 3) for dx in range(-2, 3))
    # Cutout: zeroes at most a 3x3 box (int(16 * 0.2 + 0.5) = 3) per sample, and nothing else changes.
    ones = torch.ones(64, 1, 16, 16)
    cut = rand_cutout(ones, generator=torch.Generator().manual_seed(0))
    zeros = (cut == 0).flatten(1).sum(1)
    assert zeros.max() == 9 and zeros.min() >= 3 and ((cut == 0) | (cut == 1)).all()
    # Differentiable.
    xg = x.clone().requires_grad_(True)
    diff_augment(xg).sum().backward()
    assert xg.grad is not None and np.isfinite(xg.grad.numpy()).all()


def test_bf16_projection_weights_are_bitwise_what_autocast_computes():
    """cast_projection_weights(bf16): under bf16 autocast, logits and input gradients are bitwise unchanged, and
    only conv/linear weights changed dtype (BatchNorm stays fp32)."""
    torch.manual_seed(0)
    ref = ProjectedDiscriminator(["vgg16_bn", "tf_efficientnet_lite0"], resolution=128, pretrained=False).train()
    cast = copy.deepcopy(ref)
    cast.cast_projection_weights(torch.bfloat16)
    proj = cast.projections["tf_efficientnet_lite0"]
    assert proj.features.layers[0][0].weight.dtype == torch.bfloat16 and proj.random[0].ccm[0].bias.dtype == torch.bfloat16
    assert proj.features.layers[0][1].weight.dtype == torch.float32                      # stem BatchNorm
    assert all(p.dtype == torch.float32 for p in cast.discriminators.parameters())    # trained heads untouched
    outs = []
    for D in (ref, cast):
        x = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = D(x)
        (grad,) = torch.autograd.grad(sum(t.float().sum() for heads in logits for t in heads), [x])
        outs.append(([t for heads in logits for t in heads], grad))
    (la, ga), (lb, gb) = outs
    assert all(torch.equal(a, b) for a, b in zip(la, lb)) and torch.equal(ga, gb)


def test_compiled_networks_match_eager_and_eager_block_restores():
    """compile_networks: compiled projections and heads compute the eager values, gradients and buffer updates (the
    heads' spectral-norm vectors and BatchNorm statistics); `eager()` switches back; state_dict keys are unchanged."""
    torch.manual_seed(0)
    D = ProjectedDiscriminator(["tiny"], img_resolution=16, pretrained=False).train()
    ref = copy.deepcopy(D)
    keys = list(D.state_dict())
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    D.compile_networks()
    assert list(D.state_dict()) == keys                                 # compiled graphs are not submodules
    calls = []
    for key in list(D._compiled):
        D._compiled[key] = lambda *a, f=D._compiled[key], k=key: calls.append(k) or f(*a)
    with torch.no_grad():
        D(x)
        with D.eager():
            D(x)
        D(x)
    assert calls == [("projection", "tiny"), ("heads", "tiny")] * 2    # 2 forwards outside eager()
    with torch.no_grad():
        ref(x), ref(x), ref(x)
    for (k, a), b in zip(ref.state_dict().items(), D.state_dict().values()):  # same buffer updates
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6), k
    assert all(m._prepared is None for m in D.modules() if hasattr(m, "_prepared"))  # no weight left behind
    grads = []                                                          # the G step's path: gradient w.r.t. the image
    for net in (ref, D):
        h = x.clone().requires_grad_(True)
        logits = net(h)
        grads.append(torch.autograd.grad(sum(t.sum() for heads in logits for t in heads), [h, *net.trainable_parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-4 * grads[0][0].abs().max())
    ga, gb = (torch.cat([g.flatten() for g in gs[1:]]) for gs in grads)  # heads' biases before BatchNorm: ~0 +- rounding
    assert (ga - gb).norm() <= 1e-4 * ga.norm()


def test_forward_pair_equals_two_calls():
    """One projection pass over reals and fakes stacked = D(x, c) then D(y, cy): same logits, same DiffAugment
    draws, same head state afterwards (BatchNorm statistics of each batch, spectral-norm vectors)."""
    torch.manual_seed(0)
    a = ProjectedDiscriminator(["tiny"], img_resolution=16, pretrained=False, label_dim=3, diffaug=True).train()
    b = copy.deepcopy(a)
    x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
    c, cy = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float(), F.one_hot(torch.tensor([2, 2, 1, 0]), 3).float()
    torch.manual_seed(5)
    two = (a(x, c), a(y, cy))
    after_two = torch.randn(())
    torch.manual_seed(5)
    pair = b.forward_pair(x, c, y, cy)
    assert torch.randn(()) == after_two                                       # as many DiffAugment draws
    for u, v in zip(two, pair):
        assert all(torch.allclose(s, t, atol=1e-6) for hs, ht in zip(u, v) for s, t in zip(hs, ht))
    assert all(torch.allclose(s, t, atol=1e-6) for s, t in zip(a.state_dict().values(), b.state_dict().values()))


def test_grouped_batchnorm_equals_per_group_batchnorm():
    """Heads' BatchNorm over groups of 3 in a batch of 6 = two separate batches of 3 (values and gradients); the
    running statistics follow the first group; the state_dict is nn.BatchNorm2d's."""
    from d2o.projected_discriminator import GroupedBatchNorm2d

    torch.manual_seed(0)
    bn, ref = GroupedBatchNorm2d(4).train(), nn.BatchNorm2d(4).train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
    ref.load_state_dict(bn.state_dict())
    ref2 = copy.deepcopy(ref)                                   # the second virtual GPU
    assert list(bn.state_dict()) == list(ref.state_dict())
    x, w = torch.randn(6, 4, 5, 5, requires_grad=True), torch.randn(6, 4, 5, 5)
    bn.group = 3
    y, y_ref = bn(x), torch.cat([ref(x[:3]), ref2(x[3:])])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    gx, gw = torch.autograd.grad((y * w).sum(), [x, bn.weight])
    rx, rw, rw2 = torch.autograd.grad((y_ref * w).sum(), [x, ref.weight, ref2.weight])
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, rw + rw2, rtol=1e-4, atol=1e-5)
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(bn.state_dict()[k], ref.state_dict()[k])
    bn.group = 4
    with pytest.raises(ValueError, match="batch 6 is not a multiple of the BatchNorm group 4"):
        bn(x)


def test_grouped_batchnorm_keeps_channels_last():
    from d2o.projected_discriminator import GroupedBatchNorm2d

    bn = GroupedBatchNorm2d(4).train()
    bn.group = 2
    x = torch.randn(4, 4, 3, 3)
    y, y_cl = bn(x), bn(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(y, y_cl, atol=1e-6)
