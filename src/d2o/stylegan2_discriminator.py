"""The StyleGAN2 discriminator of Table 1 (Karras et al. 2020; D2O's unused training/network_d.py `Discriminator`;
spec §3.6), with StyleGAN2-ADA's parameter names so that its released checkpoints load (d2o.stylegan2ada_checkpoint).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from d2o.feature_networks import _load_state_dict
from d2o.projected_discriminator import FullyConnectedLayer


def _setup_filter(f=(1, 3, 3, 1)) -> torch.Tensor:
    f = torch.as_tensor(f, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _blur(x: torch.Tensor, f: torch.Tensor, pad: int, down: int = 1) -> torch.Tensor:
    """Depthwise FIR filter with zero padding `pad` on every side, then keep every `down`-th pixel."""
    c = x.shape[1]
    w = f.flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, [pad] * 4), w, stride=down, groups=c)


class Conv2dLayer(nn.Module):
    """StyleGAN2 conv: equalised lr (weight N(0,1) x 1/sqrt(fan_in)), optional 2x FIR downsampling, bias, act.

    'lrelu' = leaky ReLU 0.2 times sqrt(2) times `gain`; 'linear' = times `gain`; optional clamp to +-conv_clamp.
    down=2 with k=3: blur [1,3,3,1] (pad 2) then stride-2 conv; down=2 with k=1: blur (pad 1) + subsample, then conv.
    """

    def __init__(self, cin, cout, kernel_size, bias=True, activation="linear", down=1, conv_clamp=None):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.register_buffer("resample_filter", _setup_filter())
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(cin * kernel_size ** 2)
        self.act_gain = np.sqrt(2) if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x, gain=1.0):
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        elif w.shape[-1] == 1:
            x = F.conv2d(_blur(x, self.resample_filter, pad=1, down=2), w)
        else:
            x = F.conv2d(_blur(x, self.resample_filter, pad=self.padding + 1), w, stride=2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2)
        x = x * (self.act_gain * gain)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


STYLEGAN2_ARCHITECTURES = ("resnet", "orig")


class DiscriminatorBlock(nn.Module):
    """[fromrgb 1x1 at the first block], conv0 3x3, conv1 3x3 down 2. 'resnet' adds a skip 1x1 down 2 and scales
    both branches by sqrt(0.5) before summing them; 'orig' has no skip (StyleGAN2-ADA's CIFAR-10 configuration)."""

    def __init__(self, cin, tmp, cout, img_channels=3, conv_clamp=None, architecture="resnet"):
        super().__init__()
        self.cin, self.architecture = cin, architecture
        self.register_buffer("resample_filter", _setup_filter())
        if cin == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp, tmp, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp, cout, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp, cout, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.cin == 0:
            x = self.fromrgb(img)
        if self.architecture == "orig":
            return self.conv1(self.conv0(x))
        y = self.skip(x, gain=np.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=np.sqrt(0.5))


def minibatch_std(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append the group-wise feature std (averaged over channels and pixels) as `num_channels` new channels."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"d2o.stylegan2_discriminator: minibatch-std needs batch {n} divisible by group size {g}")
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt().mean(dim=[2, 3, 4])  # (n/g, F)
    y = y.reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 epilogue: minibatch std (group 4, 1 channel), conv 3x3, fc (C*16 -> C), out (C -> 1 or cmap_dim)."""

    def __init__(self, channels, cmap_dim=0, mbstd_group_size=4, mbstd_num_channels=1, conv_clamp=None):
        super().__init__()
        self.cmap_dim, self.mbstd_group_size, self.mbstd_num_channels = cmap_dim, mbstd_group_size, mbstd_num_channels
        self.conv = Conv2dLayer(channels + mbstd_num_channels, channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(channels * 16, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, cmap_dim if cmap_dim else 1)

    def forward(self, x, cmap=None):
        x = x.float()
        if self.mbstd_num_channels:
            x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class MappingNetwork(nn.Module):
    """Label mapping of the conditional StyleGAN2 discriminator: embed (c_dim -> cmap_dim), normalise 2nd moment,
    `num_layers` FC lrelu layers with lr multiplier 0.01."""

    def __init__(self, c_dim, cmap_dim, num_layers=8, lr_multiplier=0.01):
        super().__init__()
        self.num_layers = num_layers
        self.embed = FullyConnectedLayer(c_dim, cmap_dim)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(cmap_dim, cmap_dim, activation="lrelu",
                                                        lr_multiplier=lr_multiplier))

    def forward(self, c):
        x = self.embed(c.float())
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 discriminator (Table 1 "StyleGAN2" rows; D2O's unused training/network_d.py `Discriminator`).

    From the release (spec §3.6): resnet architecture, channel_base 32768, channel_max 512 (512 channels at every
    level for 32 px), blocks from img_resolution down to 8, 4x4 epilogue with minibatch std (group 4, 1 channel),
    conditioning by a mapping network to cmap_dim = channels at 4x4 and a projection logit. FP16 and the
    custom CUDA ops are not used here (same math in float32); conv_clamp defaults to None as in that class.
    Parameter names follow StyleGAN2-ADA (`b32.conv0.weight`, `b4.fc.weight`, `mapping.fc0.weight`, ...).
    `architecture='orig'` (no residual skips) and the other keyword arguments cover the discriminator of
    StyleGAN2-ADA's CIFAR-10 checkpoint, which `convert_stylegan2ada_discriminator` reads for the 'pre-trained' row;
    `weights=<path>` loads a plain state_dict of the same shape. Output: [[(B, 1)]].
    """

    def __init__(self, img_resolution: int, label_dim: int = 0, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, cmap_dim: int | None = None, conv_clamp: float | None = None,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, architecture: str = "resnet",
                 mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01,
                 weights: str | os.PathLike | None = None):
        super().__init__()
        log2 = int(np.log2(img_resolution))
        if 2 ** log2 != img_resolution or img_resolution < 8:
            raise ValueError(f"d2o.stylegan2_discriminator: StyleGAN2 discriminator needs a power-of-two resolution >= 8, "
                             f"got {img_resolution}")
        if architecture not in STYLEGAN2_ARCHITECTURES:
            raise ValueError(f"d2o.stylegan2_discriminator: StyleGAN2 architecture {architecture!r} is not modelled; use one of "
                             f"{STYLEGAN2_ARCHITECTURES}")
        self.img_resolution, self.label_dim = img_resolution, label_dim
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        cmap_dim = (ch[4] if cmap_dim is None else cmap_dim) if label_dim else 0
        for r in self.block_resolutions:
            cin = ch[r] if r < img_resolution else 0
            setattr(self, f"b{r}", DiscriminatorBlock(cin, ch[r], ch[r // 2], img_channels, conv_clamp, architecture))
        if label_dim:
            self.mapping = MappingNetwork(label_dim, cmap_dim, num_layers=mapping_layers, lr_multiplier=mapping_lr_multiplier)
        self.b4 = DiscriminatorEpilogue(ch[4], cmap_dim, mbstd_group_size=mbstd_group_size,
                                        mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp)
        if weights is not None:
            _load_state_dict(self, weights, "stylegan2")

    def trainable_parameters(self):
        return list(self.parameters())

    def forward(self, x, c=None):
        h = None
        for r in self.block_resolutions:
            h = getattr(self, f"b{r}")(h, x)
        cmap = self.mapping(c) if self.label_dim else None
        return [[self.b4(h, cmap)]]
