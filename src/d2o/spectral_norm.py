"""Spectral normalisation of the discriminator heads' convolutions (spec §3.3): W / sigma(W), sigma estimated by
one power iteration per training-mode forward, as torch.nn.utils.spectral_norm (dim 0, eps 1e-12).

`SNConv2d` computes the values torch.nn.utils.spectral_norm(nn.Conv2d(...)) computes, from the same random draws at
construction, under the same state_dict names (`weight_orig`, `weight_u`, `weight_v`; the normalised `weight` is not
stored). What differs is execution: `prepare_weights(layers)` runs the power iterations of a whole group of layers
(e.g. all heads of one backbone) with multi-tensor (foreach) normalisations before the group's forward, then each
layer uses its prepared weight once. The 14 heads' layers of one backbone cost 7 small kernels each plus 8 shared
on CUDA, instead of 13 each (the divisions by the norms stay one kernel per vector: foreach fast paths need equal
shapes); before, the heads of the paper's discriminator launched more kernels than its feature networks did.
The power iterations do not depend on the activations, so doing them up front changes nothing but the launch count.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-12


def _normalize_(xs: list[torch.Tensor]) -> None:
    """x <- x / max(||x||, eps) for every x, in place (torch.nn.functional.normalize, one kernel per step)."""
    norms = torch._foreach_norm(xs)
    torch._foreach_clamp_min_(norms, EPS)
    torch._foreach_div_(xs, norms)


class SNConv2d(nn.Conv2d):
    """nn.Conv2d whose weight is W / sigma(W) (see the module docstring); arguments as nn.Conv2d."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        weight = self.weight
        del self.weight
        self.weight_orig = weight
        with torch.no_grad():  # the draws of torch.nn.utils.spectral_norm, in its order
            u = F.normalize(weight.new_empty(weight.shape[0]).normal_(0, 1), dim=0, eps=EPS)
            v = F.normalize(weight.new_empty(weight[0].numel()).normal_(0, 1), dim=0, eps=EPS)
        self.register_buffer("weight_u", u)
        self.register_buffer("weight_v", v)
        self._prepared: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, self._prepared = self._prepared, None
        if weight is None:
            (weight,) = spectral_weights([self], power_iteration=self.training)
        return self._conv_forward(x, weight, self.bias)


def spectral_weights(layers: list[SNConv2d], power_iteration: bool) -> list[torch.Tensor]:
    """W / sigma for each layer, differentiable w.r.t. W. With `power_iteration` (training mode) the layers' u and v
    first take one power-iteration step, in place: v = normalize(W^T u), u = normalize(W v)."""
    mats = [l.weight_orig.reshape(l.weight_orig.shape[0], -1) for l in layers]
    us, vs = [l.weight_u for l in layers], [l.weight_v for l in layers]
    if power_iteration:
        with torch.no_grad():
            # Each result is stored in the fp32 buffer before the next product reads it, as torch's `out=` does: under
            # CUDA autocast (mv in bf16, dot promoted to fp32) sigma sees the values torch's spectral norm sees.
            new_v = [torch.mv(m.t(), u) for m, u in zip(mats, us)]
            _normalize_(new_v)
            torch._foreach_copy_(vs, new_v)
            new_u = [torch.mv(m, v) for m, v in zip(mats, vs)]
            _normalize_(new_u)
            torch._foreach_copy_(us, new_u)
            # copies (x * 1, exact), as torch clones: the next power iteration must not change saved tensors
            us, vs = torch._foreach_mul(us, 1.0), torch._foreach_mul(vs, 1.0)
    return [l.weight_orig / torch.dot(u, torch.mv(m, v)) for l, m, u, v in zip(layers, mats, us, vs)]


def prepare_weights(module: nn.Module) -> None:
    """Compute the normalised weights of every SNConv2d in `module` as one group, for their next forward each."""
    layers = [m for m in module.modules() if isinstance(m, SNConv2d)]
    if layers:
        for layer, weight in zip(layers, spectral_weights(layers, power_iteration=module.training)):
            layer._prepared = weight
