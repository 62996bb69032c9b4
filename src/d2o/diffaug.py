"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

Used by the Projected GAN discriminator when `diffaug=True` (spec §3.1; off in every D2O train.sh run, spec §11.4).
Semantics follow the reference implementation, one random draw per sample:
- color: brightness += U(-0.5, 0.5); saturation: (x - channel mean) * U(0, 2) + channel mean;
  contrast: (x - image mean) * U(0.5, 1.5) + image mean (applied in this order);
- translation (ratio 0.125): integer shift per axis in [-s, s], s = int(size * ratio + 0.5), zero fill;
- cutout (ratio 0.2): zero a box of int(size * ratio + 0.5) pixels per axis whose centre is uniform over
  [0, size + (1 - box % 2)) (box clipped at the border).
All operations are differentiable w.r.t. x. Pass `generator` for reproducible draws (its device must match x).
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def _rand(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device, generator=generator)


def _randint(low: int, high: int, n: int, device, generator) -> torch.Tensor:
    return torch.randint(low, high, size=[n], device=device, generator=generator)


def rand_color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    x = x + (_rand(x, generator) - 0.5)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * (_rand(x, generator) * 2) + mean_c
    mean_all = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean_all) * (_rand(x, generator) + 0.5) + mean_all


def rand_translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every sample by its own integer offset (dy, dx); pixels shifted in from outside are zero."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sh, sh + 1, n, x.device, generator)
    dx = _randint(-sw, sw + 1, n, x.device, generator)
    # Output pixel (i, j) reads input pixel (i + dy, j + dx), or zero outside the image.
    iy = torch.arange(h, device=x.device)[None, :] + dy[:, None]                 # (n, h)
    ix = torch.arange(w, device=x.device)[None, :] + dx[:, None]                 # (n, w)
    valid = ((iy >= 0) & (iy < h))[:, :, None] & ((ix >= 0) & (ix < w))[:, None, :]  # (n, h, w)
    iy, ix = iy.clamp(0, h - 1), ix.clamp(0, w - 1)
    b = torch.arange(n, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[b, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)
    return out * valid[:, None].to(x.dtype)


def rand_cutout(x: torch.Tensor, ratio: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one box of int(size * ratio + 0.5) pixels per axis per sample."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - ch % 2), n, x.device, generator)
    cx = _randint(0, w + (1 - cw % 2), n, x.device, generator)
    y0, x0 = cy - ch // 2, cx - cw // 2                                          # box start (may be < 0)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + ch)[:, None])                       # (n, h)
    in_x = (xs >= x0[:, None]) & (xs < (x0 + cw)[:, None])                       # (n, w)
    mask = 1 - (in_y[:, :, None] & in_x[:, None, :]).to(x.dtype)
    return x * mask[:, None]


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated `policy` (subset of color, translation, cutout, in the given order) to NCHW x."""
    if not policy:
        return x
    for p in policy.split(","):
        p = p.strip()
        if p == "color":
            x = rand_color(x, generator)
        elif p == "translation":
            x = rand_translation(x, generator=generator)
        elif p == "cutout":
            x = rand_cutout(x, generator=generator)
        else:
            raise ValueError(f"d2o.diffaug: unknown DiffAugment policy {p!r} in {policy!r}; use a subset of {POLICIES}")
    return x.contiguous()
