"""The discriminator factory `build_discriminator` (spec §3; paper §3.2-3.3, Table 1).

| type | module | what |
|---|---|---|
| projected | d2o.projected_discriminator | D2O's Projected GAN discriminator (what every D2O run trains with) |
| vgg16, lpips | d2o.vgg_discriminators | Table 1's pretrained-VGG discriminators (nearest faithful versions, spec §3.6) |
| stylegan2 | d2o.stylegan2_discriminator | Table 1's StyleGAN2 discriminator, scratch or from a checkpoint converted by d2o.stylegan2ada_checkpoint |
"""

from __future__ import annotations

import torch.nn as nn

from d2o.projected_discriminator import ProjectedDiscriminator
from d2o.stylegan2_discriminator import StyleGAN2Discriminator
from d2o.stylegan2ada_checkpoint import load_stylegan2_checkpoint
from d2o.vgg_discriminators import LPIPSDiscriminator, VGG16Discriminator

DISCRIMINATOR_TYPES = ("projected", "vgg16", "lpips", "stylegan2")


def build_discriminator(cfg: dict, img_resolution: int, label_dim: int = 0, pretrained: bool = True) -> nn.Module:
    """Build a discriminator from a config dict: `cfg["type"]` in DISCRIMINATOR_TYPES, other keys are passed to
    the class (e.g. projected: backbones, diffaug, cout, num_discs, weights, embed_weights; stylegan2: weights).

    `pretrained` is the offline switch for feature networks (ignored by stylegan2, which is scratch-initialised
    unless cfg["checkpoint"] names a converted StyleGAN2-ADA discriminator or cfg["weights"] a state_dict).
    """
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind == "projected":
        cfg.setdefault("img_resolution", img_resolution)
        return ProjectedDiscriminator(label_dim=label_dim, pretrained=pretrained, **cfg)
    if kind in ("vgg16", "lpips"):
        if label_dim:
            raise ValueError(f"d2o.discriminators: type {kind!r} is unconditional; set label_dim=0 or use "
                             f"'projected'/'stylegan2'")
        cls = VGG16Discriminator if kind == "vgg16" else LPIPSDiscriminator
        return cls(pretrained=pretrained, **cfg)
    if kind == "stylegan2":
        checkpoint = cfg.pop("checkpoint", None)
        if checkpoint:
            return load_stylegan2_checkpoint(checkpoint, img_resolution, label_dim, **cfg)
        return StyleGAN2Discriminator(img_resolution, label_dim=label_dim, **cfg)
    raise ValueError(f"d2o.discriminators: discriminator config 'type' must be one of {DISCRIMINATOR_TYPES}, "
                     f"got {kind!r}")
