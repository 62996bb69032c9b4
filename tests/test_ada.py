"""Tests for d2o.ada: the StyleGAN2-ADA 'bgc' augmentation pipe and the adaptive-p controller (spec §3.6, §4)."""
import numpy as np
import pytest
import torch

from d2o.ada import SYM6, AdaController, AugmentPipe, downsample2x, grid_sample, upsample2x


def _images(n=8, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) * 2 - 1


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_p0_is_exact_identity_and_p_is_a_buffer():
    x = _images()
    pipe = AugmentPipe(p=0.0)
    assert torch.equal(pipe(x, generator=_gen()), x)
    assert "p" in pipe.state_dict()
    other = AugmentPipe()
    pipe.p.fill_(0.37)
    other.load_state_dict(pipe.state_dict())
    assert float(other.p) == pytest.approx(0.37)


def test_p1_changes_images_keeps_shape_dtype_range():
    x = _images(16, h=32, w=32)
    y = AugmentPipe(p=1.0)(x, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert not torch.allclose(y, x)
    per_sample = (y - x).flatten(1).abs().amax(1)
    assert (per_sample > 1e-3).float().mean() > 0.9          # nearly every sample changed at p = 1
    assert y.abs().amax() < 20                               # colour transforms may leave [-1, 1], but boundedly
    assert y.std() > 0.1


def test_determinism_with_generator():
    x = _images()
    pipe = AugmentPipe(p=0.8)
    a, b = pipe(x, generator=_gen(7)), pipe(x, generator=_gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, pipe(x, generator=_gen(8)))


def _smooth(n=32, size=32, seed=0):
    """Low-frequency images: there the sym6 up/warp/down chain is close to an exact pixel permutation."""
    return torch.nn.functional.interpolate(_images(n, h=6, w=6, seed=seed), size=(size, size), mode="bilinear")


def test_xflip_only():
    # The reference filters with the asymmetric sym6 wavelet around the warp, so a flip is exact only up to
    # the filters' phase (about 0.04 on these smooth images, more on white noise); unflipped samples are exact.
    x = _smooth()
    y = AugmentPipe(p=1.0, policy=None, xflip=1)(x, generator=_gen(2))
    same = (y - x).flatten(1).abs().amax(1)
    flip = (y - x.flip(-1)).flatten(1).abs().amax(1)
    assert ((same < 1e-5) | ((flip < 0.1) & (same > 0.5))).all()
    assert (same < 1e-5).any() and (flip < 0.1).any()          # a fair coin per sample


def test_rotate90_only_gives_quarter_turns():
    x = _smooth()
    y = AugmentPipe(p=1.0, policy=None, rotate90=1)(x, generator=_gen(3))
    err = torch.stack([(y - torch.rot90(x, k, dims=(2, 3))).flatten(1).abs().amax(1) for k in range(4)], 1)
    best, second = err.sort(1).values[:, 0], err.sort(1).values[:, 1]
    assert (best < 0.1).all() and (second > 0.5).all()
    assert set(err.argmin(1).tolist()) == {0, 1, 2, 3}
    assert (err[:, 0] < 1e-5).any()                            # k = 0 samples pass through exactly


def test_integer_translation_shifts_interior():
    x = _images(16, h=32, w=32)
    y = AugmentPipe(p=1.0, policy=None, xint=1)(x, generator=_gen(4))
    for xi, yi in zip(x, y):                                 # find the shift (|d| <= 0.125 * 32 = 4 pixels)
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                if torch.allclose(yi[:, 8:24, 8:24], xi[:, 8 - dy:24 - dy, 8 - dx:24 - dx], atol=1e-5)]
        assert len(hits) == 1                                # integer shifts commute with the filters: exact


def test_brightness_and_contrast_only():
    x = _images(16)
    y = AugmentPipe(p=1.0, policy=None, brightness=1)(x, generator=_gen(5))
    d = y - x
    assert torch.allclose(d, d.mean(dim=(1, 2, 3), keepdim=True).expand_as(d), atol=1e-6)   # one offset per sample
    assert d.mean(dim=(1, 2, 3)).std() == pytest.approx(0.2, rel=0.6)                    # N(0, 0.2^2)
    y = AugmentPipe(p=1.0, policy=None, contrast=1)(x, generator=_gen(5))
    ratio = y / x
    assert torch.allclose(ratio, ratio.flatten(1).median(1).values.view(-1, 1, 1, 1).expand_as(ratio), atol=1e-4)


def test_luma_preserving_colour_ops():
    x = _images(8)
    luma = x.mean(dim=1)
    for key in ("hue", "saturation"):                        # both act orthogonally to the luma axis
        y = AugmentPipe(p=1.0, policy=None, **{key: 1})(x, generator=_gen(6))
        assert torch.allclose(y.mean(dim=1), luma, atol=1e-5) and not torch.allclose(y, x)
    x = _images(32)
    y = AugmentPipe(p=1.0, policy=None, lumaflip=1)(x, generator=_gen(6))
    same = (y - x).flatten(1).abs().amax(1) < 1e-5
    flip = (y.mean(1) + x.mean(1)).flatten(1).abs().amax(1) < 1e-5      # luma reflected, chroma kept
    assert (same ^ flip).all() and same.any() and flip.any()
    assert torch.allclose(y - y.mean(1, keepdim=True), x - x.mean(1, keepdim=True), atol=1e-5)


def test_geometric_chain_reconstructs_identity_and_grayscale():
    x = _images(4, h=16, w=12)
    pipe = AugmentPipe()
    y = pipe._warp(x, torch.eye(3).expand(4, 3, 3))          # orthogonal sym6: up/down is perfect reconstruction
    assert y.shape == x.shape and (y - x).abs().max() < 1e-5
    f = torch.tensor(SYM6) / sum(SYM6)
    up = upsample2x(x, f)
    assert up.shape[-2:] == (32, 24)
    assert downsample2x(torch.nn.functional.pad(up, [12] * 4), f, crop=6).shape[-2:] == (22, 18)
    g = AugmentPipe(p=1.0)(_images(4, c=1), generator=_gen(9))
    assert g.shape == (4, 1, 16, 16) and torch.isfinite(g).all()


def test_gradients_flow_through_pipe():
    x = _images(4).requires_grad_(True)
    y = AugmentPipe(p=1.0)(x, generator=_gen(10))
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _bilinear_reference(x, grid):
    """Bilinear sampling, zeros padding, align_corners False, from gathers: autograd differentiates it to any order."""
    b, c, h, w = x.shape
    ix, iy = ((grid[..., 0] + 1) * w - 1) / 2, ((grid[..., 1] + 1) * h - 1) / 2
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xc, yc = ix.floor() + dx, iy.floor() + dy
            weight = (1 - (ix - xc).abs()) * (1 - (iy - yc).abs())
            weight = weight * ((xc >= 0) & (xc <= w - 1) & (yc >= 0) & (yc <= h - 1))
            idx = (yc.clamp(0, h - 1) * w + xc.clamp(0, w - 1)).long().flatten(1)
            v = x.flatten(2).gather(2, idx[:, None].expand(b, c, -1)).view(b, c, *ix.shape[1:])
            out = out + v * weight[:, None]
    return out


def test_grid_sample_matches_torch_to_second_order():
    """R1 through ADA needs d/dx of the input gradient; torch's grid_sample has no such derivative on CUDA (nor on
    CPU in some versions): ours must match F.grid_sample and a gather-based bilinear reference to second order."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    grid = torch.rand(2, 7, 4, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2     # some samples fall outside
    w = torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64)

    def second_order(fn):
        xx = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad((torch.tanh(fn(xx, grid)) * w).sum(), xx, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.square().sum(), xx)      # as R1: through the input gradient's graph
        return fn(x, grid), gx.detach(), ggx

    torch.testing.assert_close(grid_sample(x, grid), torch.nn.functional.grid_sample(x, grid, "bilinear", "zeros",
                                                                                    align_corners=False))
    for got, want in zip(second_order(grid_sample), second_order(_bilinear_reference)):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradgradcheck(lambda a: grid_sample(a, grid), (x.clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="grid must not require grad"):
        grid_sample(x, grid.clone().requires_grad_(True))


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="unknown option"):
        AugmentPipe(xflp=1)
    with pytest.raises(ValueError, match="policy"):
        AugmentPipe(policy="bgcfnc")


STEP = 64 * 4 / (500 * 1000)


def test_controller_raises_p_when_real_logits_mostly_positive():
    pipe = AugmentPipe(p=0.0)
    ada = AdaController(pipe, target=0.6, interval=4, ada_kimg=500)
    ps = []
    for _ in range(8):
        ada.accumulate(torch.tensor([3.0, 1.0, 2.0, -1.0, 0.5]))   # signs sum to 3 over 5 elements
        ada.accumulate([[torch.ones(2, 3)]])                        # nested lists count every element
        ps.append(ada.step(64))
    # per update: mean sign = (3 + 6) / 11 = 0.818 > 0.6 -> p += 64 * 4 / 500000, only every 4th call
    assert ps[:3] == [0.0, 0.0, 0.0] and ps[4:7] == [ps[3]] * 3
    assert ps[3] == float(np.float32(STEP)) and ps[7] == float(np.float32(ps[3] + STEP))
    assert float(pipe.p) == pytest.approx(ps[7])


def test_controller_lowers_p_floored_at_zero():
    ada = AdaController(target=0.6, p=1.5 * STEP)
    for _ in range(4):
        ada.accumulate(torch.tensor([1.0, -1.0, 2.0, -3.0]))        # mean sign 0 < 0.6
        p = ada.step(64)
    assert p == pytest.approx(0.5 * STEP, rel=1e-6)
    for _ in range(4):
        ada.accumulate(-torch.ones(5))
        p = ada.step(64)
    assert p == 0.0
    for _ in range(4):                                              # mean sign exactly at target: no change
        ada.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0]))   # (4 - 1) / 5 = 0.6
        p = ada.step(64)
    assert p == 0.0


def test_controller_resume_and_missing_stats():
    a = AdaController(p=0.1)
    for _ in range(6):
        a.accumulate(torch.ones(3))
        a.step(256)
    b = AdaController(AugmentPipe())
    b.load_state_dict(a.state_dict())
    assert float(b.pipe.p) == pytest.approx(a.p)
    for c in (a, b):
        c.accumulate(torch.ones(3))
        c.step(256)
        c.accumulate(torch.ones(3))
    assert a.step(256) == b.step(256) == pytest.approx(0.1 + 2 * 256 * 4 / 500000, rel=1e-6)
    fresh = AdaController()
    for _ in range(3):
        fresh.step(64)
    with pytest.raises(RuntimeError, match="accumulate"):
        fresh.step(64)


# Outputs of NVlabs' StyleGAN2-ADA AugmentPipe ('bgc', torch.manual_seed(123), torch 2.14 CPU), computed once
# outside this repository for the input below; the same seed on a torch.Generator gives the same draws.
GOLDEN = {
    0.5: (189.09999, 1337.5723, [[0.374805, -1.310347, 0.333404], [-0.958697, 0.523677, -0.097220],
                                 [0.490258, -0.075671, -0.164461], [0.302942, 0.167229, 0.025218]]),
    1.0: (61.076851, 2025.4012, [[-1.500022, -1.855074, 1.987021], [-0.653578, 1.316560, 0.325071],
                                 [0.481139, -0.387227, -0.168331], [-0.034145, 0.392006, -0.677174]]),
}


@pytest.mark.parametrize("p", sorted(GOLDEN))
def test_matches_reference_outputs(p):
    i = torch.arange(4 * 3 * 16 * 16, dtype=torch.float32).reshape(4, 3, 16, 16)
    x = torch.sin(i * 0.37) * torch.cos(i * 0.011)
    y = AugmentPipe(p=p)(x, generator=_gen(123))
    total, abs_total, pixels = GOLDEN[p]
    assert y.sum().item() == pytest.approx(total, abs=2e-3)
    assert y.abs().sum().item() == pytest.approx(abs_total, abs=2e-3)
    assert torch.allclose(y[:, :, 5, 7], torch.tensor(pixels), atol=1e-5)
