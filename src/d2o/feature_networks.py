"""Frozen feature networks of the Projected GAN discriminator, four taps each (spec §3.1).

| name                              | source      | normalisation       | taps at 224 input (channels @ px)        |
|-----------------------------------|-------------|---------------------|------------------------------------------|
| `vgg16_bn`                        | torchvision | ImageNet mean/std   | features[:13], [13:23], [23:33], [33:43]: 128/256/512/512 @ 112/56/28/14 |
| `tf_efficientnet_lite0`           | timm        | mean = std = 0.5    | stem + blocks[0:2], blocks[2], blocks[3:5], blocks[5:]: 24/40/112/320 @ 56/28/14/7 |
| `deit_base_distilled_patch16_224` | timm        | ImageNet mean/std   | blocks 2/5/8/11, patch tokens (class and distillation tokens dropped) as 14x14 maps, random readout to 96/192/384/768 @ 56/28/14/7 |
| `tiny`                            | this file   | mean = std = 0.5    | DEMO-ONLY random convnet, strides 2/4/8/16, 16/32/64/64 channels, no resize |

`tiny` is not part of D2O: it is a small random-init stand-in so that the offline CPU demo can train a
projected discriminator on 16-32 px images in seconds. Results obtained with it are not comparable with the paper.

Weights: `pretrained=True` asks torchvision/timm for their ImageNet weights (network download unless cached);
`weights=<path>` loads a state_dict file of the full torchvision/timm model instead (for clusters without
internet); `pretrained=False` builds random-init networks (the "offline" switch; the caller records it).
The DeiT readout convs are random in D2O as well (never trained). A feature network is frozen: no parameter
requires grad and it stays in eval mode whatever `train()` is called with (spec §3.1).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

IMAGENET_STATS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
HALF_STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

BACKBONES = ("vgg16_bn", "tf_efficientnet_lite0", "deit_base_distilled_patch16_224", "tiny")
RESIZED = ("vgg16_bn", "tf_efficientnet_lite0", "deit_base_distilled_patch16_224")  # resized to `resolution`


class FeatureNetwork(nn.Module):
    """Base class: `forward(x)` maps a normalised NCHW image to a list of four feature maps.

    Attributes: `name`, `channels` (tap channels), `strides` (tap stride w.r.t. the network input),
    `normstats` (dict of mean/std tuples for inputs in [0, 1]), `resize` (whether D2O resizes inputs to 224).
    """

    name: str
    channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    normstats: dict
    resize: bool = True

    def freeze(self) -> "FeatureNetwork":
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FeatureNetwork":
        return super().train(False)  # always eval (BatchNorm statistics and dropout frozen)


def _load_state_dict(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"d2o.feature_networks: weights file for backbone {name!r} not found: {path}; "
                                f"pass a state_dict file of the full torchvision/timm model or use pretrained=True")
    if path.endswith(".safetensors"):
        import safetensors.torch
        state = safetensors.torch.load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state, strict=True)


class VGG16BNFeatures(FeatureNetwork):
    """torchvision vgg16_bn `features` split at 13/23/33/43 (spec §3.1)."""

    name, channels, strides, normstats = "vgg16_bn", (128, 256, 512, 512), (2, 4, 8, 16), IMAGENET_STATS
    SPLITS = (13, 23, 33, 43)

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None):
        super().__init__()
        import torchvision
        model = torchvision.models.vgg16_bn(weights="IMAGENET1K_V1" if pretrained and weights is None else None)
        if weights is not None:
            _load_state_dict(model, weights, self.name)
        a, b, c, d = self.SPLITS
        f = model.features
        self.layers = nn.ModuleList([f[:a], f[a:b], f[b:c], f[c:d]])
        self.freeze()

    def forward(self, x):
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs


class EfficientNetLite0Features(FeatureNetwork):
    """timm tf_efficientnet_lite0: stem + blocks[0:2], blocks[2], blocks[3:5], blocks[5:] (spec §3.1).

    In timm >= 0.9 the stem BatchNorm and its ReLU6 are one `BatchNormAct2d` (`bn1`); in timm 0.5.4 (D2O) they
    are `bn1` + `act1`. The computation is the same.
    """

    name, channels, strides, normstats = "tf_efficientnet_lite0", (24, 40, 112, 320), (4, 8, 16, 32), HALF_STATS

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None):
        super().__init__()
        import timm
        model = timm.create_model(self.name, pretrained=pretrained and weights is None)
        if weights is not None:
            _load_state_dict(model, weights, self.name)
        stem = [model.conv_stem, model.bn1] + ([model.act1] if hasattr(model, "act1") else [])
        b = model.blocks
        self.layers = nn.ModuleList([nn.Sequential(*stem, *b[0:2]), nn.Sequential(*b[2:3]),
                                     nn.Sequential(*b[3:5]), nn.Sequential(*b[5:])])
        for m in self.modules():  # same values; an in-place ReLU6 on an activation that needs a gradient (the G step's
            if isinstance(m, nn.ReLU6):  # fakes, R1's reals) makes autograd copy its input first: 32 copies a pass
                m.inplace = False
        self.freeze()

    forward = VGG16BNFeatures.forward


class DeiTBaseDistilledFeatures(FeatureNetwork):
    """timm deit_base_distilled_patch16_224, outputs of blocks 2/5/8/11 (spec §3.1).

    Each tap drops the class and distillation tokens, reshapes the 196 patch tokens to 14x14 and applies a
    random readout: 1x1 conv to 96/192/384/768 channels, then transposed conv k4 s4 (56 px), transposed conv
    k2 s2 (28 px), identity (14 px), 3x3 conv stride 2 (7 px). The readout is random and never trained,
    as in D2O (MiDaS-style `_make_vit_b16_backbone` with `use_readout="ignore"`, start index 2).
    Inputs must be 224x224 (no position-embedding interpolation is needed there).
    """

    name, channels, strides, normstats = ("deit_base_distilled_patch16_224", (96, 192, 384, 768), (4, 8, 16, 32),
                                          IMAGENET_STATS)
    HOOKS = (2, 5, 8, 11)

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None):
        super().__init__()
        import timm
        model = timm.create_model(self.name, pretrained=pretrained and weights is None)
        if weights is not None:
            _load_state_dict(model, weights, self.name)
        self.vit = model
        self.num_prefix = 2  # class + distillation tokens
        w, (c0, c1, c2, c3) = 768, self.channels
        self.readout = nn.ModuleList([
            nn.Sequential(nn.Conv2d(w, c0, 1), nn.ConvTranspose2d(c0, c0, 4, stride=4)),
            nn.Sequential(nn.Conv2d(w, c1, 1), nn.ConvTranspose2d(c1, c1, 2, stride=2)),
            nn.Sequential(nn.Conv2d(w, c2, 1)),
            nn.Sequential(nn.Conv2d(w, c3, 1), nn.Conv2d(c3, c3, 3, stride=2, padding=1)),
        ])
        self.freeze()

    def forward(self, x):
        n, _, h, w = x.shape
        if (h, w) != (224, 224):
            raise ValueError(f"d2o.feature_networks: {self.name} expects 224x224 inputs, got {h}x{w}")
        vit = self.vit
        t = vit.patch_embed(x)
        t = vit._pos_embed(t)  # prepends class + distillation tokens, adds position embeddings
        t = vit.norm_pre(vit.patch_drop(t))
        outs = []
        for i, blk in enumerate(vit.blocks[: self.HOOKS[-1] + 1]):
            t = blk(t)
            if i in self.HOOKS:
                k = self.HOOKS.index(i)
                m = t[:, self.num_prefix:].transpose(1, 2).reshape(n, t.shape[-1], h // 16, w // 16)
                outs.append(self.readout[k](m))
        return outs


class TinyFeatures(FeatureNetwork):
    """DEMO-ONLY stand-in (not in D2O): random 4-stage convnet, strides 2/4/8/16, 16/32/64/64 channels.

    Each stage: 3x3 stride-2 conv + LeakyReLU 0.2 + 3x3 conv + LeakyReLU 0.2. Inputs are not resized (fast on
    16-32 px images). Deterministic given the torch RNG state at construction. Never pretrained.
    """

    name, channels, strides, normstats, resize = "tiny", (16, 32, 64, 64), (2, 4, 8, 16), HALF_STATS, False

    def __init__(self, pretrained: bool = False, weights: str | os.PathLike | None = None):
        super().__init__()
        if pretrained:
            raise ValueError("d2o.feature_networks: backbone 'tiny' has no pretrained weights; use pretrained=False")
        cin, layers = 3, []
        for c in self.channels:
            layers.append(nn.Sequential(nn.Conv2d(cin, c, 3, 2, 1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2)))
            cin = c
        self.layers = nn.ModuleList(layers)
        if weights is not None:
            _load_state_dict(self, weights, self.name)
        self.freeze()

    forward = VGG16BNFeatures.forward


_CLASSES = {"vgg16_bn": VGG16BNFeatures, "tf_efficientnet_lite0": EfficientNetLite0Features,
            "deit_base_distilled_patch16_224": DeiTBaseDistilledFeatures, "tiny": TinyFeatures}


def build_feature_network(name: str, pretrained: bool = True,
                          weights: str | os.PathLike | None = None) -> FeatureNetwork:
    """Build the frozen feature network `name` (one of BACKBONES); see the module docstring for weights."""
    if name not in _CLASSES:
        raise ValueError(f"d2o.feature_networks: unknown backbone {name!r}; choose one of {BACKBONES}")
    return _CLASSES[name](pretrained=pretrained, weights=weights)
