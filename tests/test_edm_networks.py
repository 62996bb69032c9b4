"""EDM networks (d2o.edm.networks) against NVlabs/edm outputs stored in tests/fixtures/edm_reference
(spec §1.2, §1.4), parameter counts of the paper's architectures, D2OPrecond coefficients and EDMLoss."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_edm_reference import as_tensor, build_net, load_maker, rel_err  # noqa: E402

import d2o.edm as edm  # noqa: E402
import d2o.edm.networks as nets  # noqa: E402
from d2o.edm.loss import EDMLoss  # noqa: E402

MAKER = load_maker()
NAMES = sorted(MAKER.CONFIGS)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_names_shapes_and_constant_buffers_match_edm(name):
    net, fx = build_net(name, MAKER)
    sd = net.state_dict()
    ours = [(n, json.dumps(list(sd[n].shape))) for n in sorted(sd)]
    assert ours == list(zip(fx["sd_names"].tolist(), fx["sd_shapes"].tolist()))
    consts = {k[len("buffer/"):]: v for k, v in fx.items() if k.startswith("buffer/")}
    assert consts, "fixture has no constant buffers"
    for n, v in consts.items():  # float32 arithmetic at init: bit-equal on the fixture's torch (2.14), ~1e-6 on 2.11
        np.testing.assert_allclose(sd[n].numpy(), v, rtol=2e-6, atol=0, err_msg=n)
    # strict loading of a state_dict carrying EDM's names and shapes
    edm_sd = {n: torch.zeros(json.loads(s)) for n, s in zip(fx["sd_names"], fx["sd_shapes"])}
    net.load_state_dict(edm_sd, strict=True)
    assert float(fx["sigma_min"]) == pytest.approx(net.sigma_min, rel=1e-7)
    assert float(fx["sigma_max"]) == pytest.approx(net.sigma_max, rel=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_edm(name):
    net, fx = build_net(name, MAKER)
    has_aug = "in_augment_labels" in fx
    labels = as_tensor(fx["in_class_labels"]) if "in_class_labels" in fx else None
    extra = dict(augment_labels=as_tensor(fx["in_augment_labels"])) if has_aug else {}
    with torch.no_grad():
        model = net.model.to(torch.float64)
        y = model(as_tensor(fx["in_x"]), as_tensor(fx["in_noise_labels"]), labels, **extra)
        assert y.dtype == torch.float64
        assert rel_err(y.numpy(), fx["unet_out"]) <= 1e-5, rel_err(y.numpy(), fx["unet_out"])
        net = net.to(torch.float32)
        f32 = lambda t: t.float() if t is not None else None  # noqa: E731
        d = net(as_tensor(fx["in_x"], torch.float32), as_tensor(fx["in_sigma"], torch.float32), f32(labels),
                **{k: f32(v) for k, v in extra.items()})
        assert d.dtype == torch.float32
        assert rel_err(d.numpy(), fx["precond_out"]) <= 1e-5, rel_err(d.numpy(), fx["precond_out"])
        # iDDPM's levels u come from float32 sin: a few ulps apart between CPUs' vector units (EDM's code alike)
        np.testing.assert_allclose(net.round_sigma(torch.tensor([0.01, 0.5, 70.0])).numpy(), fx["round_sigma"], rtol=1e-6)


def _count(net):
    return sum(p.numel() for p in net.parameters())


NCSNPP = dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual", decoder_type="standard",
              channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128, channel_mult=[2, 2, 2])
DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard", decoder_type="standard",
              channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2])


@pytest.mark.parametrize("res,kwargs,expected", [
    (32, dict(NCSNPP, label_dim=0, augment_dim=9, attn_resolutions=[16], num_blocks=4, dropout=0.13), 56_397_827),
    (32, dict(NCSNPP, label_dim=10, augment_dim=9), 56_400_643),
    (64, dict(NCSNPP, label_dim=0, augment_dim=9, channel_mult=[1, 2, 2, 2]), 62_761_091),
    (32, dict(DDPMPP, label_dim=0, augment_dim=9), 55_733_891),
    (32, dict(DDPMPP, label_dim=10, augment_dim=9), 55_735_299),
    (64, dict(model_type="DhariwalUNet", label_dim=1000, model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3,
              attn_resolutions=[32, 16, 8], augment_dim=0), 295_899_267),
])
def test_parameter_counts_on_meta_device(res, kwargs, expected):
    # expected values: EDM's own classes enumerated on the meta device (EDM train.py configs; ImageNet --augment=0)
    with torch.device("meta"):
        net = edm.EDMPrecond(img_resolution=res, img_channels=3, **kwargs)
        d2o_net = edm.D2OPrecond(img_resolution=res, img_channels=3, **kwargs)
    assert all(t.device.type == "meta" for t in list(net.parameters()) + list(net.buffers()))
    assert _count(net) == expected
    assert _count(d2o_net) == expected
    assert list(net.state_dict()) == list(d2o_net.state_dict())


@pytest.mark.parametrize("name,expected", [("edm-cifar10-uncond", 56_397_827), ("edm-cifar10-cond", 56_400_643),
                                           ("edm-afhqv2", 62_761_091), ("edm-ffhq", 62_761_091),
                                           ("edm-imagenet", 295_899_267), ("edm-cifar10-uncond-vp", 55_733_891),
                                           ("edm-cifar10-cond-vp", 55_735_299)])
def test_released_networks_have_edms_parameter_counts(name, expected):
    """d2o.edm.released (what the benchmark and the smoke run build): EDM's parameter counts of each checkpoint."""
    from d2o.edm.released import released_network

    with torch.device("meta"):
        assert _count(edm.EDMPrecond(**released_network(name))) == expected


def test_all_preconds_build_on_meta_and_expose_attributes():
    with torch.device("meta"):
        built = [edm.VPPrecond(32, 3, **DDPMPP), edm.VEPrecond(32, 3, **NCSNPP), edm.iDDPMPrecond(64, 3),
                 edm.EDMPrecond(32, 3, label_dim=10, **NCSNPP), edm.D2OPrecond(32, 3, label_dim=10, **NCSNPP)]
    for net in built:
        for attr in ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "model"):
            assert hasattr(net, attr), (type(net).__name__, attr)
        assert callable(net.round_sigma)
    # iDDPM levels u_{M-1}, u_0 as EDM computes them (float32; also recorded in adm_uncond_iddpm.npz)
    assert built[2].sigma_min == pytest.approx(0.0064223, rel=1e-4) and built[2].sigma_max == pytest.approx(20291.17, rel=1e-5)
    assert built[3].sigma_data == 0.5 and built[4].sigma_max == math.inf and built[4].sigma_min == 0


def test_edm_class_map_covers_edm_persistent_classes():
    edm_classes = ["Linear", "Conv2d", "GroupNorm", "UNetBlock", "PositionalEmbedding", "FourierEmbedding", "SongUNet",
                   "DhariwalUNet", "VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond"]
    for c in edm_classes:
        assert nets.EDM_CLASS_MAP[f"training.networks.{c}"] is getattr(nets, c)
    assert nets.EDM_CLASS_MAP["training.networks.D2OPrecond"] is nets.D2OPrecond


def test_d2oprecond_coefficients_at_80_and_boundary():
    torch.manual_seed(0)
    net = edm.D2OPrecond(**MAKER.CONFIGS["ncsnpp_cond"][1]).eval()
    c_skip, c_out, c_in, c_noise = net.coefficients(torch.tensor(80.0))
    assert float(c_skip) == pytest.approx(3.906e-5, rel=1e-3)
    assert float(c_out) == pytest.approx(0.49998, abs=1e-5)
    assert float(c_in) == pytest.approx(0.0125, rel=1e-4)
    assert float(c_noise) == pytest.approx(1.09551, abs=1e-5)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, torch.full([2], 0.002)), x)           # D(x, eps) = x exactly
        # Same U-Net inside EDMPrecond: at sigma 80 the two differ only through c_skip/c_out (spec §1.4).
        ref = edm.EDMPrecond(**MAKER.CONFIGS["ncsnpp_cond"][1]).eval()
        ref.load_state_dict(net.state_dict(), strict=True)
        z = torch.randn(2, 3, 16, 16)
        labels = torch.eye(10)[[3, 7]]
        a, b = net(80 * z, torch.tensor(80.0), labels), ref(80 * z, torch.tensor(80.0), labels)
        assert rel_err(a.numpy(), b.numpy()) < 1e-4
        # As the authors coded it, float64 inputs keep a float64 skip path.
        assert net(80 * z.double(), torch.tensor(80.0), labels).dtype == torch.float64


def test_d2oprecond_under_bf16_autocast_returns_fp32_close_to_fp32():
    """The trainer runs G under bf16 autocast (CUDA): the U-Net's bf16 output is taken back to the fp32 skip path."""
    torch.manual_seed(0)
    net = edm.D2OPrecond(**MAKER.CONFIGS["ncsnpp_cond"][1]).eval()
    z, labels = torch.randn(2, 3, 16, 16), torch.eye(10)[[3, 7]]
    with torch.no_grad():
        ref = net(80 * z, torch.tensor(80.0), labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(80 * z, torch.tensor(80.0), labels)
    assert out.dtype == torch.float32
    assert 0 < rel_err(out.numpy(), ref.numpy()) < 5e-2     # bf16 differs, but only by bf16 rounding


def test_attention_op_backward_matches_autograd():
    q = torch.randn(2, 8, 5, requires_grad=True)
    k = torch.randn(2, 8, 7, requires_grad=True)
    g = torch.randn(2, 5, 7)
    nets.AttentionOp.apply(q, k).backward(g)
    q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    torch.einsum("ncq,nck->nqk", q2, k2 / math.sqrt(8)).softmax(dim=2).backward(g)
    torch.testing.assert_close(q.grad, q2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(k.grad, k2.grad, rtol=1e-5, atol=1e-6)


def test_edm_loss_matches_definition():
    net = edm.EDMPrecond(**MAKER.CONFIGS["ddpmpp_cond"][1]).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    labels = torch.eye(10)[[1, 2]]
    torch.manual_seed(5)
    loss = EDMLoss()(net, images, labels)
    torch.manual_seed(5)
    sigma = (torch.randn([2, 1, 1, 1]) * 1.2 - 1.2).exp()
    n = torch.randn_like(images) * sigma
    with torch.no_grad():
        expected = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2 * (net(images + n, sigma, labels) - images) ** 2
    assert loss.shape == images.shape
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=0)
