"""The D2O generator: an EDM U-Net re-wrapped in D2OPrecond, G(z) = D(80 z, 80) (paper §3, App C; spec §1.3, §7).

Multi-step generators (Fig 2) run n network evaluations on the grid T(n, n) > ... > T(0, n) = 0.002 with an
Euler conversion between them outside the network (the released code's D2OPrecond cannot take a target sigma,
spec §6.2); the 2-step generator may use a fixed middle sigma (Fig 2B).
"""

from __future__ import annotations

import torch

from d2o.edm import model_io
from d2o.schedule import T

SIGMA_MAX = 80.0
SIGMA_MIN = 0.002
GENERATOR_DROPOUT = 0.0  # D2O fine-tunes with dropout off on every dataset (spec §1.2; Table 10)


def generator_sigmas(steps: int = 1, middle_sigma: float | None = None, rho: float = 7.0) -> list[float]:
    """Noise levels a `steps`-step generator visits, from 80 down to 0.002 (exclusive of the final 0.002)."""
    if middle_sigma is not None:
        if steps != 2:
            raise ValueError("middle_sigma applies to 2-step generators only (Fig 2B); set generator_steps: 2")
        return [SIGMA_MAX, float(middle_sigma)]
    return [float(T(i, steps, SIGMA_MIN, SIGMA_MAX, rho)) for i in range(steps, 0, -1)]


def run_generator(net: torch.nn.Module, z: torch.Tensor, class_labels: torch.Tensor | None,
                  sigmas: list[float], **net_kwargs) -> torch.Tensor:
    """x = sigmas[0] z; D at each sigma; Euler move to the next sigma; the last denoised output is the image.

    The one place of the (multi-step) generator: training calls it with gradients, d2o.sampling.multistep_sample
    with EDM's per-seed noise."""
    x = z * sigmas[0]
    for k, sigma in enumerate(sigmas):
        s = torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
        denoised = net(x, s, class_labels, **net_kwargs)
        if k + 1 == len(sigmas):
            return denoised
        nxt = sigmas[k + 1]
        x = x + ((sigma - nxt) / sigma) * (denoised - x)
    raise ValueError("sigmas must not be empty")


def build_generator(init: torch.nn.Module, label_dim: int, init_weights: str = "pretrained",
                    use_fp16: bool = False) -> torch.nn.Module:
    """D2OPrecond around the init checkpoint's U-Net (dropout 0, no augment labels), weights copied by name.

    Every parameter/buffer whose name and shape match is copied (the checkpoint's map_augment weight is dropped,
    as the authors' loader does); `init_weights="random"` keeps the fresh initialisation (the toy thesis run).
    `use_fp16` runs the U-Net in bfloat16 on CUDA as the authors' --fp16=True does (D2OPrecond's explicit casts;
    sampling forces fp32).
    """
    _, kwargs = init._d2o_init  # the U-Net kwargs; the preconditioner becomes D2OPrecond
    kwargs = dict(kwargs)
    for drop in ("sigma_min", "sigma_max", "beta_d", "beta_min", "M", "epsilon_t", "C_1", "C_2"):
        kwargs.pop(drop, None)
    kwargs.update(label_dim=label_dim, dropout=GENERATOR_DROPOUT, augment_dim=0, label_dropout=0, use_fp16=use_fp16)
    g = model_io.build("D2OPrecond", **kwargs)
    if init_weights == "pretrained":
        src = dict(init.state_dict())
        dst = g.state_dict()
        copied = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
        missing = [k for k in dst if k not in copied]
        if len(copied) < 0.9 * len(dst):
            raise RuntimeError(f"init checkpoint matches only {len(copied)}/{len(dst)} generator tensors; missing e.g. {missing[:5]}")
        g.load_state_dict(copied, strict=False)
    return g
