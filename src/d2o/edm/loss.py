"""EDM training losses (NVlabs/edm `training/loss.py` semantics), used for the tiny EDM pre-training of the demo.

Each loss draws one noise level per image, noises the (optionally augmented) images, denoises them with the
preconditioned network and returns the weighted squared error per element, shape (N, C, H, W), like EDM.
"""

from __future__ import annotations

import torch

__all__ = ["EDMLoss", "VPLoss", "VELoss", "EDM_LOSS_CLASS_MAP"]


def _denoising_loss(net, images, labels, augment_pipe, sigma, weight):
    y, augment_labels = augment_pipe(images) if augment_pipe is not None else (images, None)
    n = torch.randn_like(y) * sigma
    D_yn = net(y + n, sigma, labels, augment_labels=augment_labels)
    return weight * ((D_yn - y) ** 2)


class EDMLoss:
    """EDM loss: ln(sigma) ~ N(P_mean, P_std^2), weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."""

    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
        self.P_mean = P_mean
        self.P_std = P_std
        self.sigma_data = sigma_data

    def __call__(self, net, images, labels=None, augment_pipe=None):
        rnd_normal = torch.randn([images.shape[0], 1, 1, 1], device=images.device)
        sigma = (rnd_normal * self.P_std + self.P_mean).exp()
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        return _denoising_loss(net, images, labels, augment_pipe, sigma, weight)


class VPLoss:
    """VP loss: t ~ U(epsilon_t, 1), sigma = sigma_VP(t), weight 1/sigma^2."""

    def __init__(self, beta_d=19.9, beta_min=0.1, epsilon_t=1e-5):
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.epsilon_t = epsilon_t

    def __call__(self, net, images, labels=None, augment_pipe=None):
        rnd_uniform = torch.rand([images.shape[0], 1, 1, 1], device=images.device)
        sigma = self.sigma(1 + rnd_uniform * (self.epsilon_t - 1))
        return _denoising_loss(net, images, labels, augment_pipe, sigma, 1 / sigma ** 2)

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()


class VELoss:
    """VE loss: sigma log-uniform in [sigma_min, sigma_max], weight 1/sigma^2."""

    def __init__(self, sigma_min=0.02, sigma_max=100):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def __call__(self, net, images, labels=None, augment_pipe=None):
        rnd_uniform = torch.rand([images.shape[0], 1, 1, 1], device=images.device)
        sigma = self.sigma_min * ((self.sigma_max / self.sigma_min) ** rnd_uniform)
        return _denoising_loss(net, images, labels, augment_pipe, sigma, 1 / sigma ** 2)


EDM_LOSS_CLASS_MAP: dict[str, type] = {f"training.loss.{c.__name__}": c for c in (EDMLoss, VPLoss, VELoss)}
