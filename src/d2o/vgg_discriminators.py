"""The VGG16 and LPIPS discriminators of Table 1 (spec §3.6; paper §3.2-3.3): pretrained VGG16 features, frozen,
with trainable heads. The release has no training code for them: each docstring says what is taken from the release
and what is unverified. Outputs follow the project's nested logit format (a list over "backbones" of lists over heads
of (B, P) tensors).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from d2o.feature_networks import _load_state_dict, from_hub
from d2o.spectral_norm import SNConv2d, prepare_weights

# LPIPS ScalingLayer constants (lpips package): x in [-1, 1] -> (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# LPIPS VGG16 taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) as slices of torchvision vgg16().features.
LPIPS_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
LPIPS_VGG_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features(pretrained: bool, weights: str | os.PathLike | None) -> nn.Sequential:
    import torchvision
    model = torchvision.models.vgg16(weights="IMAGENET1K_V1" if from_hub("vgg16", pretrained, weights) else None)
    if weights is not None:
        _load_state_dict(model, weights, "vgg16")
    return model.features


class _ScalingLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.shift) / self.scale


class _FrozenMixin:
    """Keeps `self.features` frozen and in eval mode when `freeze_features` is set."""

    def _freeze(self):
        if self.freeze_features:
            self.features.requires_grad_(False)
            self.features.train(False)

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        if self.freeze_features:
            self.features.train(False)
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]


class VGG16Discriminator(_FrozenMixin, nn.Module):
    """Single-scale pretrained-VGG16 discriminator (Table 1 "VGG16" row), mirroring D2O's unused `PretrainedD`.

    From the release (spec §3.6): LPIPS ScalingLayer -> VGG features -> global average pool -> Linear + SiLU ->
    bias-free Linear to one logit; Linear = EDM-style kaiming-normal init (std 1/sqrt(fan_in)), zero bias.
    Unverified: which VGG variant and cut (here torchvision vgg16 `features`, all 31 layers, 512 channels),
    whether the features are trained (here frozen by default, `freeze_features=False` trains them), whether
    inputs are resized (here `resolution=None`: native size) and whether conditioning was used (not supported).
    Output: [[(B, 1)]].
    """

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None,
                 freeze_features: bool = True, resolution: int | None = None, feat_dim: int = 512):
        super().__init__()
        self.scale = _ScalingLayer()
        self.features = _vgg16_features(pretrained, weights)
        self.freeze_features, self.resolution = freeze_features, resolution
        self.fc = nn.Linear(feat_dim, feat_dim)
        self.out = nn.Linear(feat_dim, 1, bias=False)
        for lin in (self.fc, self.out):
            with torch.no_grad():
                lin.weight.normal_(0, 1 / math.sqrt(lin.in_features))
                if lin.bias is not None:
                    lin.bias.zero_()
        self._freeze()

    def forward(self, x, c=None):
        if self.resolution is not None and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        h = self.features(self.scale(x)).mean(dim=[2, 3])
        return [[self.out(F.silu(self.fc(h)))]]


class LPIPSDiscriminator(_FrozenMixin, nn.Module):
    """Multi-scale discriminator on the five LPIPS VGG16 taps (Table 1 "LPIPS" row; paper §3.3 calls it multi-scale).

    Not in the release (spec §3.6: design unverified). Built here as: LPIPS ScalingLayer -> torchvision vgg16
    features split at relu1_2/2_2/3_3/4_3/5_3 (64/128/256/512/512 ch; frozen by default) -> per tap a trainable
    head: spectral-norm 3x3 conv to `head_channels` + LeakyReLU 0.2 + spectral-norm 1x1 conv to one logit per
    position. Inputs keep their size unless `resolution` is given. Output: [[(B, P_1), ..., (B, P_5)]]
    (P = 32^2, 16^2, 8^2, 4^2, 2^2 at 32 px).
    """

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None,
                 freeze_features: bool = True, resolution: int | None = None, head_channels: int = 64):
        super().__init__()
        self.scale = _ScalingLayer()
        feats = _vgg16_features(pretrained, weights)
        self.features = nn.ModuleList([feats[a:b] for a, b in LPIPS_VGG_SLICES])
        self.freeze_features, self.resolution = freeze_features, resolution
        self.heads = nn.ModuleList([nn.Sequential(SNConv2d(ch, head_channels, 3, 1, 1), nn.LeakyReLU(0.2),
                                                  SNConv2d(head_channels, 1, 1)) for ch in LPIPS_VGG_CHANNELS])
        self._freeze()

    def forward(self, x, c=None):
        if self.resolution is not None and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        h, logits = self.scale(x), []
        prepare_weights(self.heads)
        for stage, head in zip(self.features, self.heads):
            h = stage(h)
            logits.append(head(h).flatten(1))
        return [logits]
