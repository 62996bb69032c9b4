"""Noise-level schedules and single solver steps (spec §6, §7, §8; EDM Algorithm 2).

T(i, N) is the rho-spaced time schedule of [P App C] / [D2O:training/loss.py] cut_sigma: T(N, N) = sigma_max,
T(0, N) = sigma_min.  EDM's sampler grid `edm_sigma_steps(num_steps)` walks the same curve from sigma_max down to
sigma_min in num_steps points and appends sigma = 0, i.e. edm_sigma_steps(n)[:-1] == sigma_grid(n - 1).
"""

from __future__ import annotations

import torch

__all__ = ["T", "sigma_grid", "edm_sigma_steps", "euler_step", "heun_step"]


def T(i, N, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """T(i, N) = (sigma_max^(1/rho) + (1 - i/N) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (spec §6).

    `i` may be a number or a tensor; returns a float (number input) or a tensor."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + (1 - i / N) * (b - a)) ** rho


def sigma_grid(N, sigma_min=0.002, sigma_max=80.0, rho=7.0, dtype=torch.float64, device=None):
    """[T(N, N), T(N-1, N), ..., T(0, N)]: N + 1 levels from sigma_max down to sigma_min (spec §6/§7 grids)."""
    i = torch.arange(N, -1, -1, dtype=dtype, device=device)
    return T(i, N, sigma_min, sigma_max, rho)


def edm_sigma_steps(num_steps, sigma_min=0.002, sigma_max=80.0, rho=7.0, round_sigma=None, device=None):
    """EDM's Heun-sampler grid (EDM generate.py edm_sampler): num_steps float64 levels
    t_i = (sigma_max^(1/rho) + i/(num_steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..num_steps-1,
    passed through `round_sigma` (the network's, if given), followed by t_N = 0."""
    idx = torch.arange(num_steps, dtype=torch.float64, device=device)
    t = (sigma_max ** (1 / rho) + idx / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    if round_sigma is not None:
        t = round_sigma(t)
    return torch.cat([t, torch.zeros_like(t[:1])])


def euler_step(x, denoised, t_cur, t_next):
    """One Euler step of the probability-flow ODE dx/dt = (x - D(x, t)) / t from t_cur to t_next
    (spec §6: S(x, t, u) = x + ((t - u)/t)(D - x), written as EDM writes it). Returns (x_next, slope)."""
    d_cur = (x - denoised) / t_cur
    return x + (t_next - t_cur) * d_cur, d_cur


def heun_step(denoise, x, t_cur, t_next):
    """EDM's 2nd-order (Heun) step from t_cur to t_next; the correction is skipped when t_next == 0.

    `denoise(x, t)` returns D(x, t) (float64 in EDM's sampler). Returns (x_next, denoised at (x, t_cur))."""
    denoised = denoise(x, t_cur)
    x_next, d_cur = euler_step(x, denoised, t_cur, t_next)
    if float(t_next) != 0:
        d_prime = (x_next - denoise(x_next, t_next)) / t_next
        x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next, denoised
