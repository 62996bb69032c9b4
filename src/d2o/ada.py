"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training GANs with limited data").

Used by the Table 1 rows with VGG16 / LPIPS / StyleGAN2 discriminators (spec §3.6: "these used ADA with
gamma_r1 = 0.01"; spec §4 "ADA": fixed `--augment-p` or adaptive with target > 0, 500 kimg speed, interval 4,
driven by the sign of the real logits). D2O's train.py builds the pipe with the 'bgc' policy (all twelve
multipliers 1); its augment.py is the StyleGAN2-ADA pipe, plus returned augment labels that nothing uses.

`AugmentPipe` follows StyleGAN2-ADA's `AugmentPipe` for 'bgc':
- pixel blitting: xflip, rotate90, integer translation (uniform in +-0.125 of the size, rounded to pixels);
- general geometric: isotropic scale (2^N(0, 0.2^2)), pre-rotation, anisotropic scale (2^N(0, 0.2^2)),
  post-rotation (uniform angle in +-pi; pre and post each with probability 1 - sqrt(1 - p), so that
  P(any rotation) = p), fractional translation (N(0, 0.125^2) of the size);
- color: brightness (+N(0, 0.2^2)), contrast (x 2^N(0, 0.5^2)), luma flip, hue rotation about the luma axis
  (uniform in +-pi), saturation (x 2^N(0, 1));
each drawn per sample and applied with probability `multiplier * p`. The geometric transforms are composed
into one inverse 3x3 matrix per sample and executed once: reflect-pad by the margin the warp needs,
upsample 2x with the orthogonal 'sym6' wavelet low-pass, bilinear `grid_sample`, low-pass and downsample 2x,
crop. The colour transforms are one 4x4 affine matrix per sample on the RGB vector.

Deviation (numerical only): a stage whose matrix is the identity for every sample of the batch is skipped
(so p = 0 returns the input exactly); the reference runs the pad/up/warp/down chain anyway, which reproduces
the input up to float rounding (orthogonal filter, perfect reconstruction). The reference's debug_percentile
and the unused image-space filtering, noise and cutout options are not implemented. Random numbers are drawn
in the reference's order (value, then gate, augmentation by augmentation) from `generator` when given.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Daubechies symlet-6 low-pass decomposition filter (12 taps); the reference's `Hz_geom` (spec §4 "ADA").
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

GEOM_KEYS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR_KEYS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
POLICIES = {  # policy name -> multipliers set to 1 (StyleGAN2-ADA train.py `augpipe_specs`)
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": COLOR_KEYS,
    "bgc": GEOM_KEYS + COLOR_KEYS,
}
STRENGTHS = dict(xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
                 brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0)

# ----------------------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Every argument is a (B,) tensor; results are (B, 3, 3) or (B, 4, 4).


def _mat(rows: list[list], ref: torch.Tensor) -> torch.Tensor:
    """Stack a nested list of (B,) tensors / python numbers into a (B, R, C) matrix."""
    elems = [e if isinstance(e, torch.Tensor) else torch.full_like(ref, float(e)) for row in rows for e in row]
    return torch.stack(elems, dim=-1).reshape(ref.shape[0], len(rows), len(rows[0]))


def _translate2(tx, ty):
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2(sx, sy):
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2(theta):
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def _const2(matrix: list[list], batch: int, device) -> torch.Tensor:
    return torch.tensor(matrix, dtype=torch.float32, device=device).expand(batch, 3, 3)


def _translate3(t):
    return _mat([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def _scale3(s):
    return _mat([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


def _rotate3(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta about the unit axis v (first three entries of a 4-vector): Rodrigues' formula."""
    vx, vy, vz = (float(e) for e in v[:3])
    c, s = torch.cos(theta), torch.sin(theta)
    k = 1 - c
    return _mat([[vx * vx * k + c, vx * vy * k - vz * s, vx * vz * k + vy * s, 0],
                 [vy * vx * k + vz * s, vy * vy * k + c, vy * vz * k - vx * s, 0],
                 [vz * vx * k - vy * s, vz * vy * k + vx * s, vz * vz * k + c, 0],
                 [0, 0, 0, 1]], theta)

# ----------------------------------------------------------------------------------------------------------
# Separable FIR resampling, equal to the reference's upfirdn2d.upsample2d / downsample2d for a 1-D filter.


def _fir(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """'Valid' separable cross-correlation of every channel with the 1-D filter f (width first, then height)."""
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(y, f.reshape(1, 1, 1, -1))
    y = F.conv2d(y, f.reshape(1, 1, -1, 1))
    return y.reshape(b, c, y.shape[2], y.shape[3])


def upsample2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Zero-insertion 2x upsampling then true convolution with f (sum 1) at gain 2 per axis; output 2H x 2W."""
    b, c, h, w = x.shape
    k = f.numel()
    y = torch.stack([x, torch.zeros_like(x)], dim=-1).reshape(b, c, h, 2 * w)      # x0 0 x1 0 ...
    y = torch.stack([y, torch.zeros_like(y)], dim=-2).reshape(b, c, 2 * h, 2 * w)
    y = F.pad(y, [(k + 1) // 2, (k - 2) // 2] * 2)
    return _fir(y, f.flip(0) * 2)


def downsample2x(x: torch.Tensor, f: torch.Tensor, crop: int) -> torch.Tensor:
    """Cross-correlation with f (sum 1, not flipped), `crop` pixels removed per side first, keep every 2nd."""
    k = f.numel()
    lo, hi = crop - (k - 1) // 2, crop - (k - 2) // 2                               # net crop per side
    if lo < 0 or hi < 0:
        raise ValueError(f"d2o/ada.py: downsample2x needs crop >= {(k - 1) // 2} for a {k}-tap filter")
    y = x[:, :, lo:x.shape[2] - hi, lo:x.shape[3] - hi]
    return _fir(y, f)[:, :, ::2, ::2]

# ----------------------------------------------------------------------------------------------------------


class AugmentPipe(torch.nn.Module):
    """StyleGAN2-ADA augmentation pipe (module docstring). Images in [-1, 1], NCHW, 1 or 3 channels.

    `policy` ('bgc', 'blit', 'geom', 'color' or None) sets the named multipliers to 1; keyword arguments then
    override single multipliers (`xflip=1`, ...) or strengths (`scale_std=0.2`, ...). `p` is a buffer, so it is
    saved and restored with the state dict.
    """

    def __init__(self, p: float = 0.0, policy: str | None = "bgc", **kwargs):
        super().__init__()
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"d2o/ada.py: unknown augmentation policy {policy!r}; use one of {sorted(POLICIES)} or None")
        unknown = set(kwargs) - set(GEOM_KEYS) - set(COLOR_KEYS) - set(STRENGTHS)
        if unknown:
            raise TypeError(f"d2o/ada.py: AugmentPipe got unknown option(s) {sorted(unknown)}; "
                            f"multipliers are {list(GEOM_KEYS + COLOR_KEYS)}, strengths {list(STRENGTHS)}")
        on = POLICIES[policy] if policy is not None else ()
        for key in GEOM_KEYS + COLOR_KEYS:
            setattr(self, key, float(kwargs.get(key, 1.0 if key in on else 0.0)))
        for key, value in STRENGTHS.items():
            setattr(self, key, float(kwargs.get(key, value)))
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))
        f = torch.tensor(SYM6, dtype=torch.float32)
        self.register_buffer("Hz_geom", f / f.sum(), persistent=False)

    def extra_repr(self) -> str:
        on = [f"{k}={getattr(self, k):g}" for k in GEOM_KEYS + COLOR_KEYS if getattr(self, k) > 0]
        return f"p={float(self.p):.4f}, " + ", ".join(on)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()):
            raise ValueError("d2o/ada.py: AugmentPipe expects a floating NCHW image tensor")
        b, c, h, w = x.shape
        dev = x.device
        p = self.p.to(dev)

        def rand(*shape):
            return torch.rand(shape, device=dev, generator=generator)

        def randn(*shape):
            return torch.randn(shape, device=dev, generator=generator)

        def gate(value, mult_p, neutral, *shape):  # keep `value` with probability mult_p, else `neutral`
            return torch.where(rand(*shape) < mult_p, value, torch.full_like(value, neutral))

        # Geometric: inverse transform G_inv (output pixel -> input pixel, centred pixel coordinates).
        eye3 = torch.eye(3, device=dev).expand(b, 3, 3)
        G = eye3
        if self.xflip > 0:
            i = gate(torch.floor(rand(b) * 2), self.xflip * p, 0.0, b)
            G = G @ _scale2(1 - 2 * i, torch.ones_like(i))
        if self.rotate90 > 0:
            i = gate(torch.floor(rand(b) * 4), self.rotate90 * p, 0.0, b)
            G = G @ _rotate2(math.pi / 2 * i)
        if self.xint > 0:
            t = gate((rand(b, 2) * 2 - 1) * self.xint_max, self.xint * p, 0.0, b, 1)
            G = G @ _translate2(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        if self.scale > 0:
            s = gate(torch.exp2(randn(b) * self.scale_std), self.scale * p, 1.0, b)
            G = G @ _scale2(1 / s, 1 / s)
        p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
        if self.rotate > 0:
            theta = gate((rand(b) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0.0, b)
            G = G @ _rotate2(theta)
        if self.aniso > 0:
            s = gate(torch.exp2(randn(b) * self.aniso_std), self.aniso * p, 1.0, b)
            G = G @ _scale2(1 / s, s)
        if self.rotate > 0:
            theta = gate((rand(b) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0.0, b)
            G = G @ _rotate2(theta)
        if self.xfrac > 0:
            t = gate(randn(b, 2) * self.xfrac_std, self.xfrac * p, 0.0, b, 1)
            G = G @ _translate2(-t[:, 0] * w, -t[:, 1] * h)
        if G is not eye3 and not torch.equal(G, eye3):
            x = self._warp(x, G)

        # Colour: C (B, 4, 4) acting on homogeneous RGB vectors.
        eye4 = torch.eye(4, device=dev).expand(b, 4, 4)
        C = eye4
        v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)              # luma axis
        vv = torch.outer(v, v)
        if self.brightness > 0:
            C = _translate3(gate(randn(b) * self.brightness_std, self.brightness * p, 0.0, b)) @ C
        if self.contrast > 0:
            C = _scale3(gate(torch.exp2(randn(b) * self.contrast_std), self.contrast * p, 1.0, b)) @ C
        if self.lumaflip > 0:
            i = gate(torch.floor(rand(b, 1, 1) * 2), self.lumaflip * p, 0.0, b, 1, 1)
            C = (eye4 - 2 * vv * i) @ C                                                  # Householder reflection
        if self.hue > 0 and c > 1:
            theta = gate((rand(b) * 2 - 1) * math.pi * self.hue_max, self.hue * p, 0.0, b)
            C = _rotate3(v, theta) @ C
        if self.saturation > 0 and c > 1:
            s = gate(torch.exp2(randn(b, 1, 1) * self.saturation_std), self.saturation * p, 1.0, b, 1, 1)
            C = (vv + (eye4 - vv) * s) @ C
        if C is not eye4 and not torch.equal(C, eye4):
            C = C.to(x.dtype)
            y = x.reshape(b, c, h * w)
            if c == 3:
                y = C[:, :3, :3] @ y + C[:, :3, 3:]
            elif c == 1:
                m = C[:, :3, :].mean(dim=1, keepdim=True)                              # (B, 1, 4)
                y = y * m[:, :, :3].sum(dim=2, keepdim=True) + m[:, :, 3:]
            else:
                raise ValueError(f"d2o/ada.py: colour augmentation needs 1 or 3 channels, got {c}")
            x = y.reshape(b, c, h, w)
        return x

    def _warp(self, x: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Execute the inverse geometric transforms G (B, 3, 3) as in the reference (module docstring)."""
        b, c, h, w = x.shape
        dev = x.device
        f = self.Hz_geom.to(dev, x.dtype)
        pad = f.numel() // 4                                                             # 3 for sym6
        cx, cy = (w - 1) / 2, (h - 1) / 2

        # Reflect-pad by the largest margin any sample's warped corners need, plus the filter support.
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=dev).t()
        cp = (G @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)                        # (xy, B * 4)
        margin = torch.cat([-cp, cp]).max(dim=1).values                                 # x0, y0, x1, y1
        margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, device=dev)
        margin = torch.minimum(margin.clamp(min=0), torch.tensor([w - 1, h - 1] * 2, device=dev, dtype=margin.dtype))
        mx0, my0, mx1, my1 = (int(m) for m in margin.ceil().tolist())
        x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
        one = torch.ones(b, device=dev)
        G = _translate2(one * (mx0 - mx1) / 2, one * (my0 - my1) / 2) @ G

        # 2x upsampling: conjugate G into the upsampled grid (pixel centres at 2i + 0.5 - 0.5).
        x = upsample2x(x, f)
        G = _scale2(one * 2, one * 2) @ G @ _scale2(one / 2, one / 2)
        G = _translate2(-one / 2, -one / 2) @ G @ _translate2(one / 2, one / 2)

        # Warp to the (upsampled, filter-padded) output grid in normalised [-1, 1] coordinates.
        out_h, out_w = (h + pad * 2) * 2, (w + pad * 2) * 2
        G = _scale2(one * 2 / x.shape[3], one * 2 / x.shape[2]) @ G @ _scale2(one * out_w / 2, one * out_h / 2)
        grid = F.affine_grid(G[:, :2, :].to(x.dtype), [b, c, out_h, out_w], align_corners=False)
        x = grid_sample(x, grid)

        # Low-pass, 2x downsample and crop the filter padding.
        return downsample2x(x, f, crop=pad * 2)

# ----------------------------------------------------------------------------------------------------------
# Bilinear grid_sample (zeros padding, align_corners False) with gradients of any order w.r.t. the image.
# R1 through ADA differentiates D's input gradient once more; CUDA's grid_sampler_2d_backward has no derivative
# (CPU falls back to a composite path that has one). The input gradient is linear in the output gradient, so its
# own backward is grid_sample again. The grid is a constant here (random transforms): it gets no gradient.


def grid_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    if grid.requires_grad:
        raise ValueError("d2o.ada.grid_sample: the sampling grid must not require grad")
    return _GridSample.apply(x, grid)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grid):
        ctx.save_for_backward(x, grid)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def backward(ctx, gy):
        x, grid = ctx.saved_tensors
        return _GridSampleInputGrad.apply(gy, x, grid), None


class _GridSampleInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gy, x, grid):
        ctx.save_for_backward(grid)
        # interpolation 0 = bilinear, padding 0 = zeros, align_corners False; only the input gradient
        gx, _ = torch.ops.aten.grid_sampler_2d_backward(gy, x, grid, 0, 0, False, [True, False])
        return gx

    @staticmethod
    def backward(ctx, ggx):
        (grid,) = ctx.saved_tensors
        return _GridSample.apply(ggx, grid), None, None


def _flat_tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _flat_tensors(o)]
    raise TypeError(f"d2o/ada.py: AdaController.accumulate expects a tensor or nested lists of tensors, got {type(obj)}")


class AdaController:
    """Adaptive p (StyleGAN2-ADA training_loop; spec §4 "ADA").

    Call `accumulate(real_logits)` on every discriminator step with the raw logits on real images (a tensor or
    the discriminator's nested list; every element counts once, as training_stats' mean of `sign` does), and
    `step(batch_size)` once per iteration with the *global* batch size. Every `interval`-th call (iterations
    interval, 2 interval, ...) it sets

        p <- max(p + sign(mean sign(real logits) - target) * batch_size * interval / (ada_kimg * 1000), 0)

    (rounded to float32 like the reference's buffer), clears the statistics and writes p into `pipe.p` when a
    pipe is bound. Under torch.distributed the sign sum and count are all-reduced first (as training_stats
    does across ranks).
    """

    def __init__(self, pipe: AugmentPipe | None = None, target: float = 0.6, interval: int = 4,
                 ada_kimg: float = 500.0, p: float | None = None):
        if interval < 1 or ada_kimg <= 0:
            raise ValueError("d2o/ada.py: AdaController needs interval >= 1 and ada_kimg > 0")
        self.pipe, self.target, self.interval, self.ada_kimg = pipe, float(target), int(interval), float(ada_kimg)
        self.p = float(p) if p is not None else (float(pipe.p) if pipe is not None else 0.0)
        self.iteration = 0
        self._stats = None                                                               # [sum of signs, count]
        self._write_pipe()

    def _write_pipe(self):
        if self.pipe is not None:
            self.pipe.p.fill_(self.p)

    def accumulate(self, real_logits) -> None:
        for t in _flat_tensors(real_logits):
            t = t.detach()
            s = torch.stack([t.sign().sum(dtype=torch.float64), torch.tensor(t.numel(), dtype=torch.float64, device=t.device)])
            self._stats = s if self._stats is None else self._stats + s.to(self._stats.device)

    def step(self, batch_size: int) -> float:
        self.iteration += 1
        if self.iteration % self.interval != 0:
            return self.p
        stats = self._stats
        if stats is None:
            raise RuntimeError("d2o/ada.py: AdaController.step reached an update with no real logits; call "
                               "accumulate(real_logits) on every discriminator step before step()")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        total, count = stats.tolist()
        self._stats = None
        adjust = float(np.sign(total / count - self.target)) * (batch_size * self.interval) / (self.ada_kimg * 1000)
        self.p = max(float(np.float32(self.p + adjust)), 0.0)
        self._write_pipe()
        return self.p

    def mean_sign(self) -> float | None:
        """Mean sign of the real logits accumulated since the last update (local to this rank)."""
        return None if self._stats is None else float(self._stats[0] / self._stats[1])

    def state_dict(self) -> dict:
        stats = None if self._stats is None else [float(v) for v in self._stats.tolist()]
        return dict(p=self.p, iteration=self.iteration, stats=stats, target=self.target,
                    interval=self.interval, ada_kimg=self.ada_kimg)

    def load_state_dict(self, state: dict) -> None:
        missing = {"p", "iteration"} - set(state)
        if missing:
            raise KeyError(f"d2o/ada.py: AdaController state lacks {sorted(missing)}; pass a dict from state_dict()")
        self.p, self.iteration = float(state["p"]), int(state["iteration"])
        for key in ("target", "interval", "ada_kimg"):
            if key in state:
                setattr(self, key, type(getattr(self, key))(state[key]))
        stats = state.get("stats")
        self._stats = None if stats is None else torch.tensor(stats, dtype=torch.float64)
        self._write_pipe()
