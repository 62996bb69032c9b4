"""R1 gradient penalty, lazy regularisation and gradient sanitising (spec §4; paper §3.4, Table 2).

D2O's R1 (as coded): real images at native resolution in [-1, 1] (before DiffAugment, normalisation and resize),
gradient of the SUM of all logits (all positions, heads and backbones) w.r.t. the image, per-sample squared L2
norm, loss = batch mean x gamma / 2 x interval, applied every `interval` (16) iterations with D's Adam adjusted
by `lazy_adam_params`.
"""

from __future__ import annotations

import torch


def _flatten_logits(logits) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        return [logits]
    out = []
    for item in logits:
        out.extend(_flatten_logits(item))
    return out


def r1_penalty(D, real: torch.Tensor, c: torch.Tensor | None = None, gamma: float = 1e-4,
               interval: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, per-sample squared gradient norm (B,)); `loss` has a graph for backward (create_graph=True).

    `D(x, c)` may return a tensor or any nesting of lists of tensors; all its entries are summed.
    `interval` is the lazy-regularisation gain (use 1 for a non-lazy penalty).
    """
    real = real.detach().requires_grad_(True)
    total = sum(l.float().sum() for l in _flatten_logits(D(real, c)))
    (grad,) = torch.autograd.grad(outputs=[total], inputs=[real], create_graph=True, only_inputs=True)
    sq_norm = grad.float().square().sum(dim=[1, 2, 3])
    loss = sq_norm.mean() * (gamma / 2) * interval
    return loss, sq_norm


def lazy_adam_params(lr: float, betas: tuple[float, float], interval: int) -> tuple[float, tuple[float, float]]:
    """Lazy-regularisation Adam adjustment: ratio = interval / (interval + 1); lr * ratio, betas ** ratio.

    D2O: interval 16 -> lr x 16/17, betas (0, 0.99 ** (16/17) = 0.990585) (spec §4). interval 0/None -> unchanged.
    """
    if not interval:
        return lr, tuple(betas)
    ratio = interval / (interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def _memory_view(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of `t`'s memory in storage order, or None if `t` does not fill one dense block (e.g. a slice)."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t.as_strided((t.numel(),), (1,))
    return None


@torch.no_grad()
def sanitize_grads(params, reduce=None) -> None:
    """In place: NaN -> 0, +inf -> 1e5, -inf -> -1e5 in every existing .grad (spec §4, each stage before Adam).

    The gradients are gathered into one flat buffer, sanitised there and written back: three kernels (a multi-tensor
    copy back counts as one) instead of one per tensor, with bitwise the same values (elementwise). `reduce(flat)`, if
    given, runs on the flat buffer before the sanitising (the all-reduce mean of multi-GPU runs), so both share it."""
    groups: dict = {}
    for p in params:
        if p.grad is not None:
            view = _memory_view(p.grad)
            if view is None:  # not one dense block: its own kernels
                if reduce is not None:
                    reduce(p.grad)
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
            else:
                groups.setdefault((p.grad.dtype, p.grad.device), []).append(view)
    for views in groups.values():
        flat = torch.cat(views)
        if reduce is not None:
            reduce(flat)
        torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
        torch._foreach_copy_(views, list(flat.split([v.numel() for v in views])))

