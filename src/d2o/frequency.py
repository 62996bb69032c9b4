"""Frequency analysis of the diffusion sampler and of U-Net blocks (paper §4.5, Fig 4, Fig 6, App E; facts §9).

    D_FFT(x1, x2) = log(|FFT2(x1)| + 1) - log(|FFT2(x2)| + 1)        (elementwise over the 2-D spectrum)

No code was released for this analysis; the choices the paper leaves open are keyword arguments here:
- `channel_reduce`: "mean_after" (default; D_FFT per channel, then mean over channels), "mean_before" (mean the
  channels in the spatial domain, then one D_FFT) or "none" (keep channels).
- radial averaging: zero frequency shifted to the centre (H//2, W//2), integer radius = round(Euclidean distance),
  radii 0..`max_radius` (default min(H, W)//2, the Nyquist radius along the axes; the partly covered corner
  rings beyond it are dropped).
- averaging over images: the radial profiles are averaged over the batch (a linear operation, so the same as
  averaging D_FFT maps first).
- Fig 4 input scaling `input_scale`: "raw" (default; I_t = the noisy sampler state x_t itself, as the paper
  defines it) or "c_in" (x_t / sqrt(sigma^2 + sigma_data^2), the network's normalised input).
- blocks whose input and output channel counts differ: both are averaged over channels first (the
  "mean_before" rule), whatever `channel_reduce` says; blocks whose spatial size changes (down/up-sampling)
  are left out of D_t^b and listed under "skipped" (`blockwise_frequency`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import torch

CHANNEL_REDUCE = ("mean_after", "mean_before", "none")


def _as_tensor(x) -> torch.Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).detach().to(torch.float64)


def log_magnitude(x) -> torch.Tensor:
    """log(|FFT2(x)| + 1) over the last two dims, float64, unshifted (zero frequency at [0, 0])."""
    return torch.log1p(torch.fft.fft2(_as_tensor(x)).abs())


def d_fft(x1, x2, channel_reduce: str = "mean_after", channel_dim: int = -3) -> torch.Tensor:
    """D_FFT(x1, x2) over the last two dims (paper Eq. in §4.5), unshifted spectrum layout, float64.

    Inputs are (..., C, H, W) for channel_reduce "mean_after"/"mean_before" (the channel axis is `channel_dim`),
    or any (..., H, W) for "none". Output drops the channel axis unless channel_reduce="none". "mean_before" also accepts
    different channel counts (U-Net blocks that change width).
    """
    x1, x2 = _as_tensor(x1), _as_tensor(x2)
    if x1.ndim != x2.ndim or (x1.shape != x2.shape and channel_reduce != "mean_before"):
        raise ValueError(f"d_fft: shapes differ {tuple(x1.shape)} vs {tuple(x2.shape)} (only channel_reduce="
                         f"'mean_before' accepts different channel counts).")
    if channel_reduce == "none":
        return log_magnitude(x1) - log_magnitude(x2)
    if x1.ndim < 3 or not -x1.ndim <= channel_dim < x1.ndim or channel_dim % x1.ndim >= x1.ndim - 2:
        raise ValueError(f"d_fft: channel_dim={channel_dim} must be a non-spatial axis of shape {tuple(x1.shape)}.")
    if channel_reduce == "mean_after":
        return (log_magnitude(x1) - log_magnitude(x2)).mean(dim=channel_dim)
    if channel_reduce == "mean_before":
        m1, m2 = x1.mean(dim=channel_dim), x2.mean(dim=channel_dim)
        if m1.shape != m2.shape:
            raise ValueError(f"d_fft: shapes differ {tuple(x1.shape)} vs {tuple(x2.shape)} beyond the channel axis.")
        return log_magnitude(m1) - log_magnitude(m2)
    raise ValueError(f"d_fft: channel_reduce must be one of {CHANNEL_REDUCE}, got {channel_reduce!r}.")


def centered(spec) -> torch.Tensor:
    """fftshift over the last two dims: zero frequency at (H//2, W//2), for display and radial averaging."""
    return torch.fft.fftshift(_as_tensor(spec), dim=(-2, -1))


def radius_map(H: int, W: int) -> torch.Tensor:
    """Integer radius (rounded distance to (H//2, W//2)) of every pixel of a centred H x W spectrum."""
    yy = torch.arange(H, dtype=torch.float64)[:, None] - H // 2
    xx = torch.arange(W, dtype=torch.float64)[None, :] - W // 2
    return torch.sqrt(yy ** 2 + xx ** 2).round().to(torch.int64)


def radial_average(spec2d, shifted: bool = False, max_radius: int | None = None) -> torch.Tensor:
    """Mean of a 2-D spectrum over rings of equal integer radius: (..., H, W) -> (..., R), R = max_radius + 1.

    `spec2d` is in unshifted FFT layout unless `shifted=True`. Radius 0 is the zero frequency (small radius =
    low frequency). Default `max_radius` = min(H, W) // 2.
    """
    spec = _as_tensor(spec2d)
    spec = spec if shifted else centered(spec)
    H, W = spec.shape[-2:]
    R = (min(H, W) // 2 if max_radius is None else max_radius) + 1
    r = radius_map(H, W).flatten()
    keep = r < R
    onehot = torch.zeros(H * W, R, dtype=torch.float64)
    onehot[torch.arange(H * W)[keep], r[keep]] = 1.0
    weights = onehot / onehot.sum(dim=0).clamp(min=1)
    return spec.reshape(*spec.shape[:-2], H * W) @ weights


# ----------------------------------------------------------------------------------------------------------------
# Global frequency evolution over the sampler trajectory (Fig 4).


class TrajectoryRecorder:
    """Sampler callback(step_index, sigma, x_in, denoised) keeping CPU float64 copies of I_t and O_t per step."""

    def __init__(self):
        self.records = []

    def __call__(self, step_index, sigma, x_in, denoised):
        self.records.append({"step": int(step_index), "sigma": float(sigma),
                             "x_in": _as_tensor(x_in).cpu(), "denoised": _as_tensor(denoised).cpu()})


def record_trajectory(sampler, *args, callback_name: str = "record", **kwargs):
    """Run `sampler(*args, record=recorder, **kwargs)` (d2o.sampling.edm_sample calls `record(i, t_hat, x_hat,
    denoised)` once per step); `callback_name` names the sampler's callback argument. Returns (output, records)."""
    recorder = TrajectoryRecorder()
    out = sampler(*args, **{callback_name: recorder}, **kwargs)
    return out, recorder.records


def global_frequency_analysis(records, channel_reduce: str = "mean_after", input_scale: str = "raw",
                              sigma_data: float = 0.5, max_radius: int | None = None) -> dict:
    """Fig 4 rows and radial profiles from per-step records {"step", "sigma", "x_in", "denoised"} (N, C, H, W).

    Returns numpy arrays (T steps in step order; the O_t - O_{t-1} rows start at the second step):
      sigma (T,); I, O (T, N, C, H, W); O_diff = O_t - O_{t-1} (T-1, ...); OI_diff = O_t - I_t (T, ...);
      D_O = D_FFT(O_t, O_{t-1}) and D_OI = D_FFT(O_t, I_t), centred for display, (T-1 | T, N, H, W);
      radial_D_O (T-1, R) and radial_D_OI (T, R), averaged over images (Fig 4B, 4C).
    """
    recs = sorted(records, key=lambda r: r["step"])
    if len(recs) < 2:
        raise ValueError("global_frequency_analysis: need records of at least two sampler steps.")
    sigma = torch.tensor([r["sigma"] for r in recs], dtype=torch.float64)
    I = torch.stack([_as_tensor(r["x_in"]) for r in recs])
    O = torch.stack([_as_tensor(r["denoised"]) for r in recs])
    if input_scale == "c_in":
        I = I / torch.sqrt(sigma ** 2 + sigma_data ** 2).reshape(-1, *[1] * (I.ndim - 1))
    elif input_scale != "raw":
        raise ValueError(f"global_frequency_analysis: input_scale must be 'raw' or 'c_in', got {input_scale!r}.")
    D_O = d_fft(O[1:], O[:-1], channel_reduce)
    D_OI = d_fft(O, I, channel_reduce)
    radial = lambda D: radial_average(D, max_radius=max_radius).mean(dim=1).numpy()
    return {"step": np.array([r["step"] for r in recs]), "sigma": sigma.numpy(), "I": I.numpy(), "O": O.numpy(),
            "O_diff": (O[1:] - O[:-1]).numpy(), "OI_diff": (O - I).numpy(),
            "D_O": centered(D_O).numpy(), "D_OI": centered(D_OI).numpy(),
            "radial_D_O": radial(D_O), "radial_D_OI": radial(D_OI)}


# ----------------------------------------------------------------------------------------------------------------
# Block-wise frequency specialisation (Fig 6, App E).


def unet_blocks(unet) -> dict:
    """{name: module} of U-Net blocks: entries of `enc` and `dec` ModuleDicts (EDM SongUNet/DhariwalUNet),
    looking through preconditioning wrappers that hold the U-Net as `.model`."""
    while not hasattr(unet, "enc") and hasattr(unet, "model"):
        unet = unet.model
    if not (hasattr(unet, "enc") and hasattr(unet, "dec")):
        raise TypeError(f"block_hooks: {type(unet).__name__} has no `enc`/`dec` ModuleDicts (EDM U-Net expected).")
    return {**{f"enc.{k}": m for k, m in unet.enc.items()}, **{f"dec.{k}": m for k, m in unet.dec.items()}}


class BlockRecorder:
    """Records of U-Net block calls: {"call", "block", "x_in", "x_out"}; `call` counts the U-Net's forward calls
    since the hooks were installed (one per network evaluation; map calls to sampler steps yourself)."""

    def __init__(self):
        self.records = []
        self.call = -1


@contextlib.contextmanager
def block_hooks(unet, blocks: dict | None = None):
    """Context manager: forward hooks on every U-Net block (default `unet_blocks(unet)`) recording the block's
    input x^{b-1} and output x^b (CPU float32). Only calls of the form block(x, emb) are recorded, which leaves
    out EDM's auxiliary convs/norms (they take x alone). Yields a `BlockRecorder`."""
    blocks = unet_blocks(unet) if blocks is None else blocks
    rec = BlockRecorder()

    def count_call(module, args):
        rec.call += 1

    def make_hook(name):
        def hook(module, args, kwargs, output):
            if len(args) + len(kwargs) < 2 or not torch.is_tensor(args[0] if args else None):
                return
            rec.records.append({"call": rec.call, "block": name, "x_in": args[0].detach().float().cpu(),
                                "x_out": output.detach().float().cpu()})
        return hook

    handles = [unet.register_forward_pre_hook(count_call)]
    handles += [m.register_forward_hook(make_hook(n), with_kwargs=True) for n, m in blocks.items()]
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def blockwise_frequency(records, channel_reduce: str = "mean_after", max_radius: int | None = None) -> dict:
    """D_t^b = D_FFT(x_t^b, x_t^{b-1}) radial profiles per block per U-Net call, averaged over images.

    Returns {"blocks": {name: {"call" (K,), "radial" (K, R_b), "mean_in" (K, H, W), "mean_out" (K, H, W),
    "channels": (C_in, C_out), "resolution": H}}, "skipped": [names whose spatial size changes]}.
    mean_in/mean_out are the channel- and image-averaged feature maps (Fig 6A). When C_in != C_out both sides are
    averaged over channels before the FFT (mean_before rule).
    """
    by_block = defaultdict(list)
    for r in records:
        by_block[r["block"]].append(r)
    out, skipped = {}, []
    for name, recs in by_block.items():
        recs = sorted(recs, key=lambda r: r["call"])
        x_in, x_out = recs[0]["x_in"], recs[0]["x_out"]
        if x_in.shape[-2:] != x_out.shape[-2:]:
            skipped.append(name)
            continue
        same_c = x_in.shape[-3] == x_out.shape[-3]
        radial, mean_in, mean_out = [], [], []
        for r in recs:
            D = d_fft(r["x_out"], r["x_in"], channel_reduce if same_c else "mean_before")
            radial.append(radial_average(D, max_radius=max_radius).mean(dim=0))
            mean_in.append(_as_tensor(r["x_in"]).mean(dim=(0, 1)))
            mean_out.append(_as_tensor(r["x_out"]).mean(dim=(0, 1)))
        out[name] = {"call": np.array([r["call"] for r in recs]), "radial": torch.stack(radial).numpy(),
                     "mean_in": torch.stack(mean_in).numpy(), "mean_out": torch.stack(mean_out).numpy(),
                     "channels": (int(x_in.shape[-3]), int(x_out.shape[-3])), "resolution": int(x_out.shape[-1])}
    return {"blocks": out, "skipped": skipped}


def figure_data(trajectory_records, block_records, num_steps: int, fig4_steps, channel_reduce: str = "mean_after",
                label: str = "") -> dict:
    """The arrays Figs 4 and 6 show (the npz of rule frequency_analysis), from one Heun run of `num_steps` steps:

    - Fig 4A rows at the steps `fig4_steps` (those below num_steps): I_t, O_t, O_t - I_t and D_FFT(O_t, I_t) at the
      step; O_t - O_t-1 and D_FFT(O_t, O_t-1) at the step before (the first step: itself); Fig 4B/C radial averages.
    - Fig 6: block records taken at the first network evaluation of each Heun step (2 calls per step, 1 for the
      last); the decoder blocks sorted by resolution, the lowest-resolution one as the deep block and the
      highest-resolution one as the shallow block (radial profiles over time), and each decoder block's mean input
      and output feature map at the last recorded step (Fig 6A, by depth).
    """
    import numpy as np

    g = global_frequency_analysis(trajectory_records, channel_reduce)
    first_call = set(np.cumsum([0] + [2] * (num_steps - 1))[:num_steps].tolist())
    b = blockwise_frequency([r for r in block_records if r["call"] in first_call], channel_reduce)
    dec = [n for n in b["blocks"] if n.startswith("dec.")]
    by_res = sorted(dec, key=lambda n: b["blocks"][n]["resolution"])
    deep, shallow = by_res[0], by_res[-1]
    show = [s for s in fig4_steps if s < num_steps]
    out = {"sigma": g["sigma"], "steps_shown": np.array(show), "radial_D_O": g["radial_D_O"], "radial_D_OI": g["radial_D_OI"],
           "shallow_block": np.array(shallow), "deep_block": np.array(deep),
           "radial_shallow": b["blocks"][shallow]["radial"], "radial_deep": b["blocks"][deep]["radial"],
           "label": np.array(label)}
    for key in ("I", "O", "OI_diff", "D_OI"):
        out[key] = g[key][show, 0]
    for key in ("O_diff", "D_O"):
        out[key] = g[key][[max(s - 1, 0) for s in show], 0]
    depths = sorted(dec, key=lambda n: (b["blocks"][n]["resolution"], n))
    for i, name in enumerate(depths):
        out[f"fmap_in_{i}"] = b["blocks"][name]["mean_in"][-1]
        out[f"fmap_out_{i}"] = b["blocks"][name]["mean_out"][-1]
    out["fmap_names"] = np.array(depths)
    return out

