"""EMA of the generator weights by half-life with ramp-up (paper App C; spec §5).

Every iteration: h = min(H, rampup * n) with n the images seen before this batch (the ramp-up also applies when
fine-tuning a transferred model, as the authors coded it); beta = 0.5 ** (batch / max(h, 1e-8));
ema = beta * ema + (1 - beta) * net, over all parameters (buffers are copied).
"""

from __future__ import annotations

import torch


def ema_beta(batch: int, nimg: int, halflife_img: float, rampup_ratio: float | None = 0.05) -> float:
    h = halflife_img
    if rampup_ratio is not None:
        h = min(h, nimg * rampup_ratio)
    return 0.5 ** (batch / max(h, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, beta: float) -> None:
    # one fused multi-tensor kernel: ema += (1 - beta) (net - ema)
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
