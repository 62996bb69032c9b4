"""Frequency analysis (paper §4.5, Fig 4, Fig 6, App E; facts §9) on synthetic signals with known spectra."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from d2o.frequency import (blockwise_frequency, block_hooks, centered, d_fft, global_frequency_analysis,
                           radial_average, radius_map, record_trajectory)


def cosine_image(ky, kx, n=32):
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (ky * y + kx * x) / n)


@pytest.mark.parametrize("k", [1, 3, 7, 12, 16])
def test_cosine_radial_peak_at_its_frequency(k):
    prof = radial_average(torch.fft.fft2(cosine_image(0, k)).abs())
    assert prof.shape == (17,)
    assert int(prof.argmax()) == k
    assert torch.all(prof[torch.arange(17) != k] < 1e-9)


def test_diagonal_cosine_peak_at_euclidean_radius():
    prof = radial_average(torch.fft.fft2(cosine_image(3, 4)).abs())  # |(3, 4)| = 5
    assert int(prof.argmax()) == 5


def test_d_fft_zero_for_identical_and_constant_images():
    const = torch.full((2, 3, 16, 16), 0.7)
    assert torch.equal(d_fft(const, const), torch.zeros(2, 16, 16, dtype=torch.float64))
    x = torch.randn(2, 3, 16, 16)
    for mode in ("mean_after", "mean_before", "none"):
        assert d_fft(x, x, mode).abs().max() == 0


def test_d_fft_values_and_antisymmetry():
    delta = torch.zeros(1, 8, 8)
    delta[0, 0, 0] = 1  # |FFT| = 1 everywhere
    assert torch.allclose(d_fft(delta, torch.zeros(1, 8, 8)), torch.full((8, 8), math.log(2), dtype=torch.float64))
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    for mode in ("mean_after", "mean_before", "none"):
        assert torch.allclose(d_fft(a, b, mode), -d_fft(b, a, mode))
    # the two channel rules are different operations, equal when the channels are identical
    assert not torch.allclose(d_fft(a, b, "mean_after"), d_fft(a, b, "mean_before"))
    a3, b3 = a[:, :1].expand(-1, 3, -1, -1), b[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(d_fft(a3, b3, "mean_after"), d_fft(a3, b3, "mean_before"))
    assert torch.allclose(d_fft(a, b, "mean_after"), d_fft(a, b, "none").mean(dim=1))
    with pytest.raises(ValueError, match="channel_reduce"):
        d_fft(a, b, "max")


def test_radial_average_exact_for_radially_symmetric_spectrum():
    r = radius_map(32, 32)
    profile = torch.exp(-torch.arange(17, dtype=torch.float64) / 4)
    spec = profile[r.clamp(max=16)]  # centred layout, value depends on the ring only
    assert torch.allclose(radial_average(spec, shifted=True), profile)
    unshifted = torch.fft.ifftshift(spec, dim=(-2, -1))
    batched = torch.stack([unshifted, 2 * unshifted])[:, None]  # (2, 1, 32, 32)
    out = radial_average(batched)
    assert out.shape == (2, 1, 17)
    assert torch.allclose(out[1, 0], 2 * profile)


def test_radial_average_rings_by_hand():
    spec = torch.arange(16, dtype=torch.float64).reshape(4, 4)  # centred, centre at (2, 2)
    prof = radial_average(spec, shifted=True)
    ring1 = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2), (3, 3)]  # distances 1 and sqrt(2) round to 1
    ring2 = [(0, 2), (2, 0)]  # distance 2; corners beyond min(H, W)//2 = 2 are dropped
    assert prof.tolist() == [spec[2, 2].item(), np.mean([spec[p].item() for p in ring1]),
                             np.mean([spec[p].item() for p in ring2])]


# ------------------------------------------------------------------ global analysis on a Gaussian toy model


class WienerDenoiser:
    """Exact denoiser of stationary Gaussian data with power spectrum P: O = IFFT(P / (P + sigma^2) FFT(x))."""

    def __init__(self, n=32):
        fy, fx = torch.meshgrid(torch.fft.fftfreq(n), torch.fft.fftfreq(n), indexing="ij")
        self.P = 1.0 / (1 + (torch.sqrt(fy ** 2 + fx ** 2) * n / 2) ** 2) ** 1.5 * n * n  # per-frequency variance
        self.n = n

    def sample_data(self, shape, g):
        z = torch.fft.fft2(torch.randn(shape, generator=g, dtype=torch.float64))
        return torch.fft.ifft2(z * self.P.sqrt()).real

    def __call__(self, x, sigma):
        return torch.fft.ifft2(torch.fft.fft2(x) * self.P / (self.P + sigma ** 2)).real


def heun_sampler(denoise, latents, num_steps=12, sigma_min=0.002, sigma_max=80.0, rho=7.0, record=None):
    """EDM's deterministic Heun sampler (Karras et al. Alg. 1), minimal, with record(i, sigma, x_in, denoised)."""
    i = torch.arange(num_steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)])
    x = latents * t[0]
    for k in range(num_steps):
        den = denoise(x, t[k])
        d = (x - den) / t[k]
        x_next = x + (t[k + 1] - t[k]) * d
        if k < num_steps - 1:
            d2 = (x_next - denoise(x_next, t[k + 1])) / t[k + 1]
            x_next = x + (t[k + 1] - t[k]) * (d + d2) / 2
        if record is not None:
            record(k, t[k], x, den)
        x = x_next
    return x


def test_global_frequency_analysis_on_gaussian_toy():
    g = torch.Generator().manual_seed(0)
    net = WienerDenoiser()
    latents = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    out, records = record_trajectory(heun_sampler, net, latents)
    assert len(records) == 12 and torch.is_tensor(out)
    res = global_frequency_analysis(records)
    T, R = 12, 17
    assert res["I"].shape == (T, 4, 3, 32, 32) and res["O_diff"].shape == (T - 1, 4, 3, 32, 32)
    assert res["D_O"].shape == (T - 1, 4, 32, 32) and res["D_OI"].shape == (T, 4, 32, 32)
    assert res["radial_D_O"].shape == (T - 1, R) and res["radial_D_OI"].shape == (T, R)
    assert np.allclose(res["O_diff"][2], records[3]["denoised"] - records[2]["denoised"])
    # Fig 4C: the denoiser suppresses every band, more so at early (noisier) steps
    noisy = res["sigma"] > 0.05  # below that the Wiener filter is the identity up to round-off
    assert noisy.sum() == 10 and np.all(res["radial_D_OI"][noisy, 1:] < 0)
    assert np.all(np.diff(res["radial_D_OI"][noisy].mean(axis=1)) > 0)
    # Fig 4B: the band enhanced most moves from low to high frequency along the trajectory
    peak = res["radial_D_O"][:6, 1:].argmax(axis=1) + 1
    assert np.all(np.diff(peak) > 0), peak
    assert res["radial_D_O"][0, 1] > res["radial_D_O"][0, -1]
    c_in = global_frequency_analysis(records, input_scale="c_in")
    assert np.allclose(c_in["I"][0], res["I"][0] / math.sqrt(80.0 ** 2 + 0.25))


# ------------------------------------------------------------------ block-wise hooks on a tiny U-Net


class Block(nn.Module):
    def __init__(self, cin, cout, scale=1.0, down=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None
        self.scale, self.down = scale, down

    def forward(self, x, emb):
        y = x * self.scale if self.conv is None else self.conv(x)
        return y[..., ::2, ::2] if self.down else y + 0 * emb.mean()


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.ModuleDict({"16x16_conv": nn.Conv2d(3, 4, 1), "16x16_block0": Block(4, 4, scale=2.0),
                                  "8x8_down": Block(4, 4, down=True)})
        self.dec = nn.ModuleDict({"8x8_block0": Block(4, 6), "8x8_aux_norm": nn.GroupNorm(2, 6)})

    def forward(self, x, emb):
        for name, blk in self.enc.items():
            x = blk(x) if isinstance(blk, nn.Conv2d) else blk(x, emb)
        x = self.dec["8x8_block0"](x, emb)
        return self.dec["8x8_aux_norm"](x)


class Precond(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = TinyUNet()

    def forward(self, x, emb):
        return self.model(x, emb)


def test_block_hooks_and_blockwise_frequency():
    net = Precond()
    x, emb = torch.randn(2, 3, 16, 16), torch.randn(2, 8)
    with block_hooks(net.model) as rec:
        net(x, emb)
        net(x + 1, emb)
    assert net(x, emb) is not None and len(net.model.enc["16x16_block0"]._forward_hooks) == 0  # hooks removed
    names = [(r["call"], r["block"]) for r in rec.records]
    assert names == [(c, b) for c in (0, 1) for b in ("enc.16x16_block0", "enc.8x8_down", "dec.8x8_block0")]
    r0 = rec.records[0]
    assert torch.allclose(r0["x_out"], 2 * r0["x_in"])

    res = blockwise_frequency(rec.records)
    assert res["skipped"] == ["enc.8x8_down"]
    b = res["blocks"]["enc.16x16_block0"]
    assert b["radial"].shape == (2, 9) and b["mean_in"].shape == (2, 16, 16)
    assert b["channels"] == (4, 4) and b["resolution"] == 16 and b["call"].tolist() == [0, 1]
    # doubling a signal raises every log-magnitude: log(2|F|+1) - log(|F|+1) lies in (0, log 2)
    assert np.all(b["radial"] > 0) and np.all(b["radial"] < math.log(2))
    assert np.allclose(b["mean_out"], 2 * b["mean_in"])
    d = res["blocks"]["dec.8x8_block0"]  # 4 -> 6 channels: channel means first
    r = rec.records[2]
    expected = radial_average(d_fft(r["x_out"], r["x_in"], "mean_before")).mean(0)
    assert d["channels"] == (4, 6) and np.allclose(d["radial"][0], expected.numpy())


def test_block_hooks_rejects_non_unet():
    with pytest.raises(TypeError, match="enc"):
        with block_hooks(nn.Linear(2, 2)):
            pass


def test_centered_puts_dc_in_middle():
    spec = torch.fft.fft2(torch.ones(8, 8)).abs()
    c = centered(spec)
    assert c[4, 4] == 64 and c.sum() == 64


def test_figure_data_of_a_real_heun_run():
    """The arrays of Figs 4 and 6 from a tiny EDM NCSN++ run through EDM's Heun sampler (the frequency_analysis job)."""
    from d2o.edm import model_io
    from d2o.frequency import TrajectoryRecorder, figure_data
    from d2o.sampling import edm_sample

    torch.manual_seed(0)
    net = model_io.build("EDMPrecond", img_resolution=16, img_channels=3, label_dim=0, model_type="SongUNet",
                         model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
                         embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                         decoder_type="standard", resample_filter=[1, 3, 3, 1])
    rec, steps = TrajectoryRecorder(), 4
    with block_hooks(net) as blocks:
        edm_sample(net, [0, 1], num_steps=steps, record=rec)
    out = figure_data(rec.records, blocks.records, steps, [0, 2, 9], label="x")
    assert out["steps_shown"].tolist() == [0, 2] and out["I"].shape[0] == 2 and out["D_O"].shape[0] == 2
    assert str(out["deep_block"]).startswith("dec.8x8") and str(out["shallow_block"]).startswith("dec.16x16")
    names = [str(n) for n in out["fmap_names"]]
    assert names == sorted(names, key=lambda n: (int(n.split(".")[1].split("x")[0]), n))
    assert out["fmap_in_0"].shape[-1] == 8 and out["radial_deep"].shape[0] == steps
