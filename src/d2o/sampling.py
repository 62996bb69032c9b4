"""Samplers with EDM's per-seed noise (spec §7, §8; [EDM:generate.py], [D2O:generate.py]).

Every image k of a batch owns one torch.Generator seeded with seeds[k] % 2**32 on the sampling device. From it
are drawn, in this order: the latent z ~ N(0, I) of shape (C, H, W) in float32; for class-conditional networks
without given labels, the class index randint(label_dim); and, for EDM's stochastic sampler, each step's churn noise
(float64, shape (C, H, W)).  EDM, D2O and D2O-F samples of the same seed therefore share z and class.
"""

from __future__ import annotations

import numpy as np
import torch

from d2o.generator import SIGMA_MIN, generator_sigmas, run_generator
from d2o.schedule import edm_sigma_steps, heun_step
from d2o.settings import Sampling

__all__ = ["SeedGenerators", "seed_noise", "edm_sampler", "edm_sample", "one_step_sample", "multistep_sample",
           "sample_experiment", "quantize"]


class SeedGenerators:
    """One torch.Generator per seed; each draw stacks one per-generator draw of shape size[1:]."""

    def __init__(self, device, seeds):
        self.generators = [torch.Generator(device).manual_seed(int(s) % (1 << 32)) for s in seeds]

    def _check(self, size):
        if size[0] != len(self.generators):
            raise ValueError(f"SeedGenerators: batch size {size[0]} != number of seeds {len(self.generators)}")

    def randn(self, size, **kwargs):
        self._check(size)
        return torch.stack([torch.randn(size[1:], generator=g, **kwargs) for g in self.generators])

    def randn_like(self, x):
        return self.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device)

    def randint(self, *args, size, **kwargs):
        self._check(size)
        return torch.stack([torch.randint(*args, size=size[1:], generator=g, **kwargs) for g in self.generators])


def _device_of(net):
    for t in list(net.parameters()) + list(net.buffers()):
        return t.device
    return torch.device("cpu")


def seed_noise(seeds, shape, device="cpu", label_dim=0, generators=None):
    """EDM's per-seed latents and labels: (latents float32 (N, *shape), class_labels one-hot float32 (N, label_dim)
    or None). Labels are drawn only when label_dim > 0, after the latents, from the same generators.
    Pass `generators` (a SeedGenerators) to keep drawing from them afterwards (stochastic sampling)."""
    device = torch.device(device)
    rnd = generators if generators is not None else SeedGenerators(device, seeds)
    latents = rnd.randn([len(seeds), *shape], device=device)
    class_labels = None
    if label_dim:
        class_labels = torch.eye(label_dim, device=device)[rnd.randint(label_dim, size=[len(seeds)], device=device)]
    return latents, class_labels


def _noise_for(net, seeds, class_labels, device):
    device = torch.device(device) if device is not None else _device_of(net)
    rnd = SeedGenerators(device, seeds)
    shape = (net.img_channels, net.img_resolution, net.img_resolution)
    latents, drawn = seed_noise(seeds, shape, device, net.label_dim, generators=rnd)
    return latents, (drawn if class_labels is None else class_labels.to(device)), rnd


def edm_sampler(net, latents, class_labels=None, randn_like=torch.randn_like, num_steps=18, sigma_min=0.002,
                sigma_max=80.0, rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, record=None):
    """EDM Algorithm 2 on given latents: float64 state x_0 = z t_0, Heun steps on the rho-grid with a final Euler
    step to 0, optional churn (gamma = min(S_churn/num_steps, sqrt 2 - 1) for S_min <= t <= S_max).
    The network is called as net(x, t, class_labels) and its output cast to float64.
    `record(i, t_hat, x_hat, denoised)` is called at each step i with the network input I_t and output O_t of the
    step's first evaluation (spec §9). Returns the float64 images before quantisation."""
    sigma_min = max(sigma_min, net.sigma_min)
    sigma_max = min(sigma_max, net.sigma_max)
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho, round_sigma=net.round_sigma, device=latents.device)

    def denoise(x, t):
        return net(x, t, class_labels).to(torch.float64)

    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = net.round_sigma(t_cur + gamma * t_cur)
        x_hat = x_cur + (t_hat ** 2 - t_cur ** 2).sqrt() * S_noise * randn_like(x_cur)
        x_next, denoised = heun_step(denoise, x_hat, t_hat, t_next)
        if record is not None:
            record(i, t_hat, x_hat, denoised)
    return x_next


@torch.no_grad()
def edm_sample(net, seeds, num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0, class_labels=None, S_churn=0.0,
               S_min=0.0, S_max=float("inf"), S_noise=1.0, record=None, device=None):
    """EDM's deterministic/stochastic Heun sampler with EDM's per-seed noise (spec §8 "EDM baseline"):
    identical to EDM generate.py for the same seeds. Returns float64 (N, C, H, W)."""
    latents, labels, rnd = _noise_for(net, seeds, class_labels, device)
    return edm_sampler(net, latents, labels, randn_like=rnd.randn_like, num_steps=num_steps, sigma_min=sigma_min,
                       sigma_max=sigma_max, rho=rho, S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise,
                       record=record)


@torch.no_grad()
def one_step_sample(net, seeds, class_labels=None, sigma=80.0, device=None):
    """D2O one-step generation G(z) = D(sigma z, sigma), sigma = 80, fp32 network, float64 latents
    ([D2O:generate.py] one_step_sampler; spec §1.4, §8). Returns float64 (N, C, H, W)."""
    latents, labels, _ = _noise_for(net, seeds, class_labels, device)
    t = torch.full([latents.shape[0], 1, 1, 1], float(sigma), dtype=torch.float64, device=latents.device)
    return net(latents.to(torch.float64) * t, t, class_labels=labels, force_fp32=True).to(torch.float64)


@torch.no_grad()
def multistep_sample(net, seeds, sigmas, class_labels=None, device=None):
    """Multi-step generator of spec §7: x = sigmas[0] z; for each level t_i (high to low) D_i = net(x, t_i); between
    levels x <- x + ((t_i - t_{i+1}) / t_i)(D_i - x) (Euler conversion outside the network, the faithful fallback
    of spec §6.2); the output is the network output at the last level before sigmas[-1] (normally 0.002).
    `sigmas` is e.g. d2o.schedule.sigma_grid(n). Returns float64 (N, C, H, W)."""
    latents, labels, _ = _noise_for(net, seeds, class_labels, device)
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) < 2 or any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError("multistep_sample: sigmas must be a decreasing grid of at least 2 levels "
                         "(e.g. d2o.schedule.sigma_grid(n))")
    x = run_generator(net, latents.to(torch.float64), labels, sigmas[:-1], force_fp32=True)
    return x.to(torch.float64)


@torch.no_grad()
def sample_experiment(net, sampling: Sampling, seeds, device=None) -> torch.Tensor:
    """Raw float images for `seeds` with the sampler an experiment defines (EDM per-seed noise throughout):
    EDM's Heun sampler for the baselines, the one-step generator, or the multi-step generator of Fig 2."""
    if sampling.method == "edm_heun":
        h = sampling.heun
        return edm_sample(net, seeds, num_steps=h.num_steps, S_churn=h.S_churn, S_min=h.S_min, S_max=h.S_max,
                          S_noise=h.S_noise, device=device)
    if sampling.method == "one_step":
        return one_step_sample(net, seeds, device=device)
    sigmas = list(generator_sigmas(sampling.generator_steps, sampling.middle_sigma)) + [SIGMA_MIN]
    return multistep_sample(net, seeds, sigmas, device=device)


def quantize(x, nhwc=True, numpy=True):
    """EDM's image quantisation: (x * 127.5 + 128).clip(0, 255) truncated to uint8; NHWC numpy by default."""
    img = (x * 127.5 + 128).clip(0, 255).to(torch.uint8)
    if nhwc:
        img = img.permute(0, 2, 3, 1)
    return img.cpu().numpy() if numpy else img
