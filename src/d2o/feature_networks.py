"""Frozen feature networks of the Projected GAN discriminator, four taps each (spec §3.1).

| name                              | source      | normalisation       | taps at 224 input (channels @ px)        |
|-----------------------------------|-------------|---------------------|------------------------------------------|
| `vgg16_bn`                        | torchvision | ImageNet mean/std   | features[:13], [13:23], [23:33], [33:43]: 128/256/512/512 @ 112/56/28/14 |
| `tf_efficientnet_lite0`           | timm        | mean = std = 0.5    | stem + blocks[0:2], blocks[2], blocks[3:5], blocks[5:]: 24/40/112/320 @ 56/28/14/7 |
| `deit_base_distilled_patch16_224` | timm        | ImageNet mean/std   | blocks 2/5/8/11, patch tokens (class and distillation tokens dropped) as 14x14 maps, random readout to 96/192/384/768 @ 56/28/14/7 |
| `tiny`                            | this file   | mean = std = 0.5    | DEMO-ONLY random convnet, strides 2/4/8/16, 16/32/64/64 channels, no resize |
| `demo-cnn`                        | d2o.demo_cnn | mean = std = 0.5   | DEMO-ONLY CNN the DAG trains on the demo shapes, strides 1/2/4/8, 32/64/128/128 channels, no resize |

`tiny` is not part of D2O: it is a small random-init stand-in so that the offline CPU demo can train a
projected discriminator on 16-32 px images in seconds. Results obtained with it are not comparable with the paper.

Weights: `weights=<path>` loads the full torchvision/timm model's state_dict from a file (the DAG's converted registry
weight, d2o.weights; key names checked); `pretrained=True` without a file asks torchvision/timm to fetch their
ImageNet weights (outside DAG jobs only: jobs are given every weight as a file); `pretrained=False` builds random-init
networks (the "offline" switch; the caller records it).
The DeiT readout convs are random in D2O as well (never trained). A feature network is frozen: no parameter
requires grad and it stays in eval mode whatever `train()` is called with (spec §3.1).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_STATS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
HALF_STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

BACKBONES = ("vgg16_bn", "tf_efficientnet_lite0", "deit_base_distilled_patch16_224", "tiny", "demo-cnn")
RESIZED = ("vgg16_bn", "tf_efficientnet_lite0", "deit_base_distilled_patch16_224")  # resized to `resolution`


class FeatureNetwork(nn.Module):
    """Base class: `forward(x)` maps a normalised NCHW image to a list of four feature maps.

    Attributes: `name`, `channels` (tap channels, after the readout), `strides` (tap stride w.r.t. the network
    input), `normstats` (dict of mean/std tuples for inputs in [0, 1]), `resize` (whether D2O resizes inputs to 224).
    `make_readout()` builds the random, never-trained layers that turn `forward`'s outputs into the taps (DeiT's
    token maps to 4 resolutions; None for the CNNs, whose outputs are the taps): they belong to a projection
    (d2o.projected_discriminator.RandomProjection), which may differ per GPU while the network is shared.
    """

    name: str
    channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    normstats: dict
    resize: bool = True

    def freeze(self) -> "FeatureNetwork":
        self.requires_grad_(False)
        return super().train(False)

    def make_readout(self) -> nn.Module | None:
        return None

    def train(self, mode: bool = True) -> "FeatureNetwork":
        return super().train(False)  # always eval (BatchNorm statistics and dropout frozen)


def _load_state_dict(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load `name`'s weights file (a converted registry weight, or a plain state dict) strictly into `model`."""
    from d2o.weights import WeightsError, read_state_dict

    try:
        model.load_state_dict(read_state_dict(path, name), strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: not the weights of {name!r} for this architecture: "
                           f"{' '.join(str(e).split())[:500]}") from None


def from_hub(name: str, pretrained: bool, weights) -> bool:
    """Whether the library fetches `name`'s ImageNet weights itself (pretrained, no file given); refused inside DAG
    jobs, which are given every weight as a file (d2o.weights)."""
    if pretrained and weights is None:
        from d2o.weights import check_hub_allowed

        check_hub_allowed(name, "d2o.feature_networks")
        return True
    return False


class VGG16BNFeatures(FeatureNetwork):
    """torchvision vgg16_bn `features` split at 13/23/33/43 (spec §3.1)."""

    name, channels, strides, normstats = "vgg16_bn", (128, 256, 512, 512), (2, 4, 8, 16), IMAGENET_STATS
    SPLITS = (13, 23, 33, 43)

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None):
        super().__init__()
        import torchvision
        model = torchvision.models.vgg16_bn(weights="IMAGENET1K_V1" if from_hub(self.name, pretrained, weights) else None)
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
        model = timm.create_model(self.name, pretrained=from_hub(self.name, pretrained, weights))
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


def _is_identity(m) -> bool:
    return m is None or isinstance(m, nn.Identity)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)` as torch.nn.LayerNorm computes it (timm's LayerNorm subclass may route to a 'fast norm' instead)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def explicit_attention(attn: nn.Module, x: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """Multi-head self-attention of a timm ViT `Attention` module, computed as timm 0.5.4 computes it.

    qkv linear -> (3, B, heads, N, head_dim) -> (q @ k^T) * scale -> softmax -> @ v -> proj. Plain matmuls and
    softmax: every backward is differentiable again (R1 needs the double backward), on CPU and CUDA, with and without
    autocast (there softmax runs in fp32 and the matmuls in the autocast dtype, as in timm 0.5.4).
    Attention dropout and projection dropout are p = 0 in DeiT (and the network is always in eval mode)."""
    b, n, c = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = (q @ k.transpose(-2, -1)) * scale
    a = a.softmax(dim=-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(b, n, c))


def _check_deit_structure(model: nn.Module, name: str) -> None:
    """Refuse a timm DeiT whose forward path has a part the explicit forward below does not compute."""
    problems = []
    if not _is_identity(getattr(model.patch_embed, "norm", None)):
        problems.append("patch_embed.norm is not Identity")
    for part in ("norm_pre", "patch_drop"):
        if not _is_identity(getattr(model, part, None)):
            problems.append(f"{part} is not Identity")
    if getattr(model, "no_embed_class", False) or getattr(model, "dynamic_img_size", False):
        problems.append("no_embed_class / dynamic_img_size set")
    if getattr(model, "num_reg_tokens", 0):
        problems.append("register tokens present")
    if tuple(model.pos_embed.shape) != (1, 198, 768) or model.dist_token is None:
        problems.append(f"pos_embed {tuple(model.pos_embed.shape)} / dist_token {model.dist_token is not None}")
    for i, blk in enumerate(model.blocks):
        attn, mlp = blk.attn, blk.mlp
        for part in ("ls1", "ls2", "drop_path1", "drop_path2", "drop_path"):
            if not _is_identity(getattr(blk, part, None)):
                problems.append(f"blocks.{i}.{part} is not Identity")
        for part in ("q_norm", "k_norm", "norm", "gate"):
            if not _is_identity(getattr(attn, part, None)):
                problems.append(f"blocks.{i}.attn.{part} is not Identity/None")
        if not _is_identity(getattr(mlp, "norm", None)):
            problems.append(f"blocks.{i}.mlp.norm is not Identity")
        if not (isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none"):
            problems.append(f"blocks.{i}.mlp.act is {mlp.act!r}, expected exact GELU")
        if not (isinstance(blk.norm1, nn.LayerNorm) and isinstance(blk.norm2, nn.LayerNorm)):
            problems.append(f"blocks.{i} norms are not LayerNorm")
        if attn.qkv.out_features != 3 * attn.proj.in_features or attn.num_heads != 12:
            problems.append(f"blocks.{i}.attn has an unexpected shape")
    if problems:
        raise ValueError(f"d2o.feature_networks: timm's {name} differs from the DeiT this class computes "
                         f"(timm {getattr(__import__('timm'), '__version__', '?')}): " + "; ".join(problems))


class DeiTBaseDistilledFeatures(FeatureNetwork):
    """timm deit_base_distilled_patch16_224, outputs of blocks 2/5/8/11 (spec §3.1), computed as timm 0.5.4 does.

    Each output drops the class and distillation tokens and reshapes the 196 patch tokens to a 768 x 14 x 14 map;
    the random readout (`make_readout`, part of a projection) turns them into the taps: 1x1 conv to 96/192/384/768
    channels, then transposed conv k4 s4 (56 px), transposed conv k2 s2 (28 px), identity (14 px), 3x3 conv
    stride 2 (7 px). The readout is random and never trained, as in D2O (MiDaS-style `_make_vit_b16_backbone` with
    `use_readout="ignore"`, start index 2), built right after the network as D2O does.
    Inputs must be 224x224 (no position-embedding interpolation is needed there).

    Forward path, written out here rather than calling timm's modules' `forward` (D2O pins timm 0.5.4; this project
    uses timm >= 0.9, whose DeiT has the same 155 state_dict names and shapes, so timm weights load unchanged into
    `self.vit`):
        tokens = patch_embed.proj(x).flatten(2).transpose(1, 2); cat(cls, dist, tokens) + pos_embed;
        per block: t + attn(LN1(t)), then t + fc2(GELU(fc1(LN2(t)))); attention as `explicit_attention`.
    What differs in timm >= 0.9 and is not used here:
    - Attention uses fused `F.scaled_dot_product_attention` (`fused_attn`, on by default). It has no double
      backward (CPU: "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
      implemented"; CUDA memory-efficient kernel: pytorch issue 116350), so R1 through timm's DeiT fails. Its
      non-fused fallback scales q before the product, (q * scale) @ k^T, where 0.5.4 scales the product,
      (q @ k^T) * scale (rounding-level difference). Here: 0.5.4's order, plain matmul + softmax, every pass.
    - timm's LayerNorm may take a "fast norm" path (off by default, low precision under autocast); here
      F.layer_norm, i.e. torch.nn.LayerNorm as in 0.5.4 (eps 1e-6 in both).
    - Parts that are identities for this model in timm >= 0.9 and absent in 0.5.4 (checked at construction, a
      ValueError otherwise): patch_embed.norm, norm_pre, patch_drop, LayerScale ls1/ls2, drop_path1/2, attention
      q_norm/k_norm/norm/gate, Mlp norm; no_embed_class False (class and distillation tokens are concatenated before
      the position embedding is added, as in 0.5.4), no dynamic image size, no register tokens. GELU is the exact
      (erf) one in both. Dropouts are p = 0 and the network is always in eval mode.
    - D2O's `forward_flex` resamples the position embedding bilinearly from 14x14 to 14x14 (an exact identity) and
      runs the final `norm` after block 11, whose output it does not use; neither is done here.
    Measured against timm 0.5.4's own `VisionTransformer` driven by D2O's `forward_vit` (feature_networks/vit.py; same
    random weights copied by name, 2 x 3 x 224 x 224 normal input, CPU, torch 2.14): the block 2/5/8/11 outputs and
    the four taps after the readout agree bitwise, max abs difference 0.0 in float32 and in float64 (taps up to 70 in
    magnitude). For comparison, timm 1.0.31's own `Block.forward` (fused attention) is up to 2.0e-5 off on the block
    outputs in float32, and feeding the readout a strided (not contiguous) token map, as this class did before, put
    tap 3 2.5e-4 off. The full discriminator is checked against D2O's code in tests/test_d2o_reference.py.
    """

    name, channels, strides, normstats = ("deit_base_distilled_patch16_224", (96, 192, 384, 768), (4, 8, 16, 32),
                                          IMAGENET_STATS)
    HOOKS = (2, 5, 8, 11)

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None):
        super().__init__()
        import timm
        model = timm.create_model(self.name, pretrained=from_hub(self.name, pretrained, weights))
        if weights is not None:
            _load_state_dict(model, weights, self.name)
        _check_deit_structure(model, self.name)
        self.vit = model
        self.num_prefix = 2  # class + distillation tokens
        self.num_heads = model.blocks[0].attn.num_heads
        self.scale = (model.embed_dim // self.num_heads) ** -0.5  # as timm 0.5.4: head_dim ** -0.5
        self.freeze()

    def make_readout(self) -> nn.Module:
        """A random readout (from the current torch RNG), frozen: token maps -> the four taps."""
        w, (c0, c1, c2, c3) = 768, self.channels
        return nn.ModuleList([
            nn.Sequential(nn.Conv2d(w, c0, 1), nn.ConvTranspose2d(c0, c0, 4, stride=4)),
            nn.Sequential(nn.Conv2d(w, c1, 1), nn.ConvTranspose2d(c1, c1, 2, stride=2)),
            nn.Sequential(nn.Conv2d(w, c2, 1)),
            nn.Sequential(nn.Conv2d(w, c3, 1), nn.Conv2d(c3, c3, 3, stride=2, padding=1)),
        ]).requires_grad_(False)

    def block(self, blk: nn.Module, t: torch.Tensor) -> torch.Tensor:
        """One pre-norm transformer block, as timm 0.5.4's `Block.forward` (see the class docstring)."""
        t = t + explicit_attention(blk.attn, _layer_norm(blk.norm1, t), self.num_heads, self.scale)
        mlp = blk.mlp
        return t + mlp.fc2(mlp.act(mlp.fc1(_layer_norm(blk.norm2, t))))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class and distillation tokens prepended and the position embedding added."""
        vit, n = self.vit, x.shape[0]
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((vit.cls_token.expand(n, -1, -1), vit.dist_token.expand(n, -1, -1), t), dim=1)
        return t + vit.pos_embed

    def forward(self, x):
        n, _, h, w = x.shape
        if (h, w) != (224, 224):
            raise ValueError(f"d2o.feature_networks: {self.name} expects 224x224 inputs, got {h}x{w}")
        t = self.tokens(x)
        outs = []
        for i, blk in enumerate(self.vit.blocks[: self.HOOKS[-1] + 1]):
            t = self.block(blk, t)
            if i in self.HOOKS:
                # contiguous, as D2O's Transpose module: the readout convs then see D2O's memory layout (a strided
                # view would take another conv kernel, 3e-6 relative off in float32 on CPU)
                outs.append(t[:, self.num_prefix:].transpose(1, 2).contiguous().view(n, t.shape[-1], h // 16, w // 16))
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


class DemoCNNFeatures(FeatureNetwork):
    """DEMO-ONLY stand-in for an ImageNet-pretrained backbone (not in D2O): the frozen conv trunk of a CNN the DAG
    trains on the demo's shapes (d2o.demo_cnn, registry demo_cnns.demo-cnn), taps at strides 1/2/4/8 (the last an
    average pool), 32/64/128/128 channels; not resized. `weights`: the DAG's file; without one, random init."""

    name, channels, strides, normstats, resize = "demo-cnn", (32, 64, 128, 128), (1, 2, 4, 8), HALF_STATS, False

    def __init__(self, pretrained: bool = False, weights: str | os.PathLike | None = None):
        super().__init__()
        from d2o.demo_cnn import DemoCNN, load_demo_cnn

        if weights is None and pretrained:
            raise ValueError("d2o.feature_networks: backbone 'demo-cnn' is trained by the DAG (rule train_demo_cnn); "
                             "pass its file as weights")
        c = (load_demo_cnn(weights) if weights is not None else DemoCNN()).convs
        self.layers = nn.ModuleList([c[0:2], c[2:4], c[4:8], nn.AvgPool2d(2)])
        self.freeze()

    forward = VGG16BNFeatures.forward


_CLASSES = {"vgg16_bn": VGG16BNFeatures, "tf_efficientnet_lite0": EfficientNetLite0Features,
            "deit_base_distilled_patch16_224": DeiTBaseDistilledFeatures, "tiny": TinyFeatures, "demo-cnn": DemoCNNFeatures}


def build_feature_network(name: str, pretrained: bool = True,
                          weights: str | os.PathLike | None = None) -> FeatureNetwork:
    """Build the frozen feature network `name` (one of BACKBONES); see the module docstring for weights."""
    if name not in _CLASSES:
        raise ValueError(f"d2o.feature_networks: unknown backbone {name!r}; choose one of {BACKBONES}")
    return _CLASSES[name](pretrained=pretrained, weights=weights)
