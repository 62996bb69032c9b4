"""Schedules (spec §6, §7) and samplers (spec §8) against EDM's edm_sampler outputs in tests/fixtures/edm_reference."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_edm_reference import build_net, load_maker, rel_err  # noqa: E402

from d2o.schedule import T, edm_sigma_steps, euler_step, heun_step, sigma_grid  # noqa: E402
from d2o.sampling import edm_sample, multistep_sample, one_step_sample, quantize, seed_noise  # noqa: E402

MAKER = load_maker()

GRID_18 = [80, 58.6715, 42.4152, 30.1833, 21.1087, 14.4808, 9.7232, 6.3736, 4.0661, 2.5152, 1.5017, 0.8606, 0.4700,
           0.2424, 0.1166, 0.0515, 0.0204, 0.0070, 0.002]
N_STEP_GRIDS = {
    2: [80, 2.5152, 0.002],
    4: [80, 17.5278, 2.5152, 0.1698, 0.002],
    6: [80, 30.1833, 9.7232, 2.5152, 0.4700, 0.0515, 0.002],
    8: [80, 39.0167, 17.5278, 7.1005, 2.5152, 0.7434, 0.1698, 0.0261, 0.002],
    10: [80, 45.3137, 24.4083, 12.3816, 5.8389, 2.5152, 0.9654, 0.3183, 0.0851, 0.0167, 0.002],
}


def test_T_endpoints_and_18_grid():
    assert T(18, 18) == pytest.approx(80, rel=1e-12) and T(0, 18) == pytest.approx(0.002, rel=1e-12)
    np.testing.assert_allclose(sigma_grid(18).numpy(), GRID_18, atol=5e-5, rtol=0)
    np.testing.assert_allclose([T(i, 18) for i in range(18, -1, -1)], sigma_grid(18).numpy(), rtol=1e-12)


@pytest.mark.parametrize("n", sorted(N_STEP_GRIDS))
def test_n_step_grids(n):
    np.testing.assert_allclose(sigma_grid(n).numpy(), N_STEP_GRIDS[n], atol=5e-5, rtol=0)


def test_edm_sigma_steps_is_T_grid_plus_zero():
    steps = edm_sigma_steps(19)
    assert steps.dtype == torch.float64 and len(steps) == 20 and steps[-1] == 0
    np.testing.assert_allclose(steps[:-1].numpy(), sigma_grid(18).numpy(), rtol=1e-12)
    np.testing.assert_allclose(edm_sigma_steps(18)[[0, -2]].numpy(), [80, 0.002], rtol=1e-12)


def test_euler_and_heun_steps():
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    D = lambda x, t: 0.5 * x  # noqa: E731  (slope (x - D)/t = 0.5 x / t)
    x_e, d = euler_step(x, D(x, 2.0), 2.0, 1.0)
    torch.testing.assert_close(x_e, x + (1.0 - 2.0) * 0.25 * x)
    calls = []
    counted = lambda x, t: calls.append(float(t)) or D(x, t)  # noqa: E731
    x_h, den = heun_step(counted, x, torch.tensor(2.0), torch.tensor(1.0))
    d2 = 0.5 * x_e / 1.0
    torch.testing.assert_close(x_h, x + (1.0 - 2.0) * (0.5 * d + 0.5 * d2))
    torch.testing.assert_close(den, D(x, 2.0))
    assert calls == [2.0, 1.0]
    calls.clear()
    x_0, _ = heun_step(counted, x, torch.tensor(2.0), torch.tensor(0.0))   # last step: Euler only
    assert calls == [2.0]
    torch.testing.assert_close(x_0, x - 2.0 * 0.25 * x)


@pytest.mark.parametrize("name", sorted(MAKER.SAMPLER_RUNS))
def test_seed_noise_and_edm_sample_equal_edm(name):
    net, fx = build_net(name, MAKER)
    seeds = fx["sampler_seeds"].tolist()
    assert seeds == MAKER.SAMPLER_RUNS[name]["seeds"]
    latents, labels = seed_noise(seeds, (3, 16, 16), "cpu", net.label_dim)
    assert latents.dtype == torch.float32
    np.testing.assert_array_equal(latents.numpy(), fx["sampler_latents"])
    if net.label_dim:
        np.testing.assert_array_equal(labels.numpy(), fx["sampler_labels"])
    else:
        assert labels is None
    kwargs = json.loads(str(fx["sampler_kwargs"]))
    images = edm_sample(net, seeds, **kwargs)
    assert images.dtype == torch.float64 and images.shape == (len(seeds), 3, 16, 16)
    assert rel_err(images.numpy(), fx["sampler_images"]) <= 1e-5, rel_err(images.numpy(), fx["sampler_images"])
    np.testing.assert_array_equal(quantize(torch.as_tensor(fx["sampler_images"])), fx["sampler_uint8"])
    # Quantised like EDM: equal wherever EDM's value is not within float noise of a truncation boundary (the
    # floats agree to 1e-5 relative; CPUs with other vector units round the last bits differently).
    ours, ref = quantize(images).astype(int), fx["sampler_uint8"].astype(int)
    scaled = np.transpose(fx["sampler_images"], (0, 2, 3, 1)) * 127.5 + 128
    near_boundary = np.abs(scaled - np.round(scaled)) < 1e-3
    assert np.array_equal(ours[~near_boundary], ref[~near_boundary]) and np.abs(ours - ref).max() <= 1


def test_record_hook_sees_every_step():
    net, _ = build_net("ncsnpp_uncond", MAKER)
    seen = []
    edm_sample(net, [0, 1], num_steps=3, record=lambda i, t, x_in, out: seen.append((i, float(t), x_in.shape, out.dtype)))
    steps = edm_sigma_steps(3)
    assert [s[0] for s in seen] == [0, 1, 2]
    np.testing.assert_allclose([s[1] for s in seen], steps[:-1].numpy(), rtol=1e-12)
    assert all(s[2] == (2, 3, 16, 16) and s[3] == torch.float64 for s in seen)


def test_one_step_and_multistep_share_edm_noise():
    net, _ = build_net("ddpmpp_cond", MAKER)
    seeds = [3, 11]
    z, labels = seed_noise(seeds, (3, 16, 16), "cpu", 10)
    with torch.no_grad():
        expected = net(80 * z.double(), torch.full([2, 1, 1, 1], 80.0, dtype=torch.float64), labels).double()
    one = one_step_sample(net, seeds)
    torch.testing.assert_close(one, expected, rtol=1e-6, atol=1e-6)
    # A 1-interval grid [80, 0.002] is the one-step generator; a 2-interval grid does one Euler conversion.
    torch.testing.assert_close(multistep_sample(net, seeds, [80.0, 0.002]), one, rtol=0, atol=0)
    grid = sigma_grid(2)
    with torch.no_grad():
        x = 80 * z.double()
        d1 = net(x, torch.full([2, 1, 1, 1], 80.0, dtype=torch.float64), labels).double()
        x = x + (grid[0] - grid[1]) / grid[0] * (d1 - x)
        d2 = net(x, grid[1].expand(2).reshape(-1, 1, 1, 1), labels).double()
    torch.testing.assert_close(multistep_sample(net, seeds, grid), d2, rtol=1e-6, atol=1e-6)
    # Given labels override the drawn ones.
    fixed = torch.eye(10)[[4, 4]]
    assert not torch.allclose(one_step_sample(net, seeds, class_labels=fixed), one)


def test_quantize_truncates_like_edm():
    x = torch.tensor([-2.0, -1.0, -0.0039, 0.0, 0.0039, 0.99, 1.0, 3.0]).reshape(1, 1, 1, 8)
    q = quantize(x)
    assert q.dtype == np.uint8 and q.shape == (1, 1, 8, 1)
    assert q.ravel().tolist() == [0, 0, 127, 128, 128, 254, 255, 255]
