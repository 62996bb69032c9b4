"""Consistency distillation (CD) as the paper defines it (App B, Tables 7-9; spec §6.1), for CD, CD-F, D2O+CD.

Per sample: i uniform in {i_min..N} (paper Table 7: 1..N; the released code: 2..N), t = T(i, N), u = T(i-1, N),
s = T(0, N) = 0.002, x_t = x + t z. Teacher H = F_sg(S_phi(x_t, t, u), u, s) with S_phi one Heun step of the frozen
EDM teacher; when u == s (i = 1) the Heun step itself is the target. Student F(x, t, s) = x + ((t - s)/t)(f(x, t) - x)
with f the D2OPrecond network (the Euler conversion is done outside the network: spec §6.2). Distance: LPIPS (VGG)
on both images bilinearly resized to 224.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from d2o.schedule import T


def student_F(net, x: torch.Tensor, t: torch.Tensor, s: float, class_labels=None) -> torch.Tensor:
    """F(x, t, s) = x + ((t - s)/t)(f(x, t) - x); t is per-sample (N,)."""
    f = net(x, t, class_labels)
    w = ((t - s) / t).view(-1, 1, 1, 1)
    return x + w * (f - x)


def build_lpips(offline: bool, vgg16_weights=None):
    """LPIPS(VGG) distance of the `lpips` package (its linear layers ship with it). The VGG16 backbone: the registry's
    torchvision `vgg16` file (`vgg16_weights`, DAG jobs), random when `offline` (labelled upstream), else torchvision's
    own download (outside DAG jobs only, d2o.weights)."""
    import lpips

    from d2o.feature_networks import from_hub
    from d2o.vgg_discriminators import LPIPS_VGG_SLICES
    from d2o.weights import read_state_dict

    hub = from_hub("vgg16", not offline, vgg16_weights)
    m = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=not hub, verbose=False)
    if vgg16_weights is not None and not offline:
        # lpips' vgg16 keeps torchvision's module indices: net.slice<k>.<i> is vgg16.features.<i>
        slice_of = {i: k for k, (a, b) in enumerate(LPIPS_VGG_SLICES, 1) for i in range(a, b)}
        state = {}
        for name, v in read_state_dict(vgg16_weights, "vgg16").items():
            parts = name.split(".")
            if parts[0] == "features" and int(parts[1]) in slice_of:
                state[f"slice{slice_of[int(parts[1])]}.{'.'.join(parts[1:])}"] = v
        m.net.load_state_dict(state, strict=True)
    return m.eval().requires_grad_(False)


def cd_loss(student, teacher, x: torch.Tensor, z: torch.Tensor, class_labels, lpips_fn, generator: torch.Generator,
            N: int = 18, rho: float = 7.0, i_min: int = 1, resolution: int = 224) -> torch.Tensor:
    """Batch-mean LPIPS between F(x_t, t, s) and the teacher target (spec §6.1)."""
    B = x.shape[0]
    i = torch.randint(i_min, N + 1, (B,), generator=generator, device="cpu").to(x.device, torch.float64)
    t, u = T(i, N, rho=rho), T(i - 1, N, rho=rho)
    s = float(T(0, N, rho=rho))
    x_t = x + t.view(-1, 1, 1, 1).to(x.dtype) * z
    with torch.no_grad():
        def denoise(v, sigma):
            sig = sigma if torch.is_tensor(sigma) else torch.full((B,), float(sigma), dtype=torch.float64)
            return teacher(v, sig.to(v.device, v.dtype), class_labels)

        def heun_per_sample(v, t_cur, t_next):
            # EDM's Heun step (d2o.schedule.heun_step) with per-sample sigmas; u >= 0.002 so the correction always runs
            tc, tn = t_cur.view(-1, 1, 1, 1).to(v.dtype), t_next.view(-1, 1, 1, 1).to(v.dtype)
            d0 = denoise(v, t_cur)
            slope = (v - d0) / tc
            v_next = v + (tn - tc) * slope
            d1 = denoise(v_next, t_next)
            return v + (tn - tc) * 0.5 * (slope + (v_next - d1) / tn)

        x_u = heun_per_sample(x_t, t, u)
        at_end = (i - 1) == 0
        target = torch.where(at_end.view(-1, 1, 1, 1), x_u,
                             student_F(student, x_u, u.to(x.dtype), s, class_labels))
    pred = student_F(student, x_t, t.to(x.dtype), s, class_labels)
    resize = lambda v: F.interpolate(v.float(), size=(resolution, resolution), mode="bilinear", align_corners=False)  # noqa: E731
    return lpips_fn(resize(pred), resize(target)).mean()

