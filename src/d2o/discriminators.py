"""Discriminators of Table 1 (CIFAR-10) and the factory `build_discriminator` (spec §3.6; paper §3.2-3.3, Table 1).

Only the Projected GAN discriminator (d2o.projected_discriminator) is what D2O trains with. For the other
Table 1 rows the release has no training code (spec §3.6): the classes below are the nearest faithful versions,
and each docstring says what is taken from the release and what is unverified. All return the project's nested
logit format: a list over "backbones" of lists over heads of (B, P) tensors.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from d2o.feature_networks import _load_state_dict
from d2o.projected_discriminator import FullyConnectedLayer, ProjectedDiscriminator
from d2o.spectral_norm import SNConv2d, prepare_weights

# LPIPS ScalingLayer constants (lpips package): x in [-1, 1] -> (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# LPIPS VGG16 taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) as slices of torchvision vgg16().features.
LPIPS_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
LPIPS_VGG_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features(pretrained: bool, weights: str | os.PathLike | None) -> nn.Sequential:
    import torchvision
    model = torchvision.models.vgg16(weights="IMAGENET1K_V1" if pretrained and weights is None else None)
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


# ---------------------------------------------------------------------------------------------------------------
# StyleGAN2 resnet discriminator (Karras et al. 2020; D2O's training/network_d.py `Discriminator`).

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
        raise ValueError(f"d2o.discriminators: minibatch-std needs batch {n} divisible by group size {g}")
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
            raise ValueError(f"d2o.discriminators: StyleGAN2 discriminator needs a power-of-two resolution >= 8, "
                             f"got {img_resolution}")
        if architecture not in STYLEGAN2_ARCHITECTURES:
            raise ValueError(f"d2o.discriminators: StyleGAN2 architecture {architecture!r} is not modelled; use one of "
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


# StyleGAN2-ADA's released discriminators (the Table 1 "StyleGAN2 (Pre-trained)" row; spec §3.6: the release names
# no checkpoint, so the registry uses the public StyleGAN2-ADA CIFAR-10 one).

STYLEGAN2ADA_KIND = "stylegan2ada-discriminator"  # config.checkpoints.<name>.kind of such a checkpoint


def _stylegan2ada_kwargs(kw: dict, where: str) -> dict:
    """StyleGAN2Discriminator kwargs for stylegan2-ada-pytorch's `Discriminator(**kw)`; refuses what is not modelled.

    Training-only settings are dropped: `num_fp16_res` (FP16 for the highest resolutions; here the math runs in the
    trainer's precision, fp32 by default), `block_kwargs.freeze_layers` and `fp16_channels_last`."""
    def fail(what):
        return ValueError(f"{where}: {what}; d2o.discriminators.StyleGAN2Discriminator does not model it")

    known = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
             "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"}
    if set(kw) - known:
        raise fail(f"unknown init arguments {sorted(set(kw) - known)}")
    block = {k: v for k, v in dict(kw.get("block_kwargs") or {}).items() if k not in ("freeze_layers", "fp16_channels_last")}
    mapping, epilogue = dict(kw.get("mapping_kwargs") or {}), dict(kw.get("epilogue_kwargs") or {})
    channels_4 = min(int(kw.get("channel_base", 32768)) // 4, int(kw.get("channel_max", 512)))
    cmap_dim = kw.get("cmap_dim") or channels_4
    for key in ("embed_features", "layer_features"):  # pickles converted from TensorFlow give cmap_dim or None
        if mapping.get(key) in (None, cmap_dim):
            mapping.pop(key, None)
    defaults = [(block, "activation", "lrelu"), (block, "resample_filter", [1, 3, 3, 1]), (mapping, "activation", "lrelu"),
                (epilogue, "activation", "lrelu")]
    for group, key, value in defaults:
        if key in group and (list(group[key]) if isinstance(value, list) else group[key]) != value:
            raise fail(f"{key}={group[key]!r} (only {value!r})")
        group.pop(key, None)
    mapping_layers, mapping_lr = mapping.pop("num_layers", 8), mapping.pop("lr_multiplier", 0.01)
    mbstd_group_size, mbstd_num_channels = epilogue.pop("mbstd_group_size", 4), epilogue.pop("mbstd_num_channels", 1)
    if block or mapping or epilogue:
        raise fail(f"block/mapping/epilogue arguments {sorted({**block, **mapping, **epilogue})}")
    if mbstd_group_size is None:
        raise fail("minibatch-std over the entire minibatch (mbstd_group_size None)")
    return dict(img_resolution=int(kw["img_resolution"]), label_dim=int(kw.get("c_dim", 0)),
                img_channels=int(kw.get("img_channels", 3)), channel_base=int(kw.get("channel_base", 32768)),
                channel_max=int(kw.get("channel_max", 512)), cmap_dim=kw.get("cmap_dim"), conv_clamp=kw.get("conv_clamp"),
                mbstd_group_size=int(mbstd_group_size), mbstd_num_channels=int(mbstd_num_channels),
                architecture=kw.get("architecture", "resnet"), mapping_layers=int(mapping_layers),
                mapping_lr_multiplier=float(mapping_lr))


def convert_stylegan2ada_discriminator(src_pkl: str | os.PathLike, dst: str | os.PathLike,
                                       extra: dict | None = None) -> Path:
    """Write the discriminator `D` of a stylegan2-ada-pytorch training pickle (e.g. its pretrained cifar10.pkl) to
    `dst` in the project format (`d2o.edm.model_io`: safetensors + header with the StyleGAN2Discriminator kwargs).

    The pickle is read with d2o.edm.persistence's allow-list unpickler: no code from the file runs (its embedded module
    sources are never looked at). Names and shapes must match StyleGAN2Discriminator exactly; weights are stored in
    float32."""
    from d2o.edm.model_io import save_model
    from d2o.edm.persistence import EDMPickleError, PersistentRecord, collect_tensors, instantiate_with, read_pickle_records

    data = read_pickle_records(src_pkl)
    rec = data.get("D") if isinstance(data, dict) else None
    if not isinstance(rec, PersistentRecord) or rec.class_name != "Discriminator":
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise EDMPickleError(f"{src_pkl}: no StyleGAN2-ADA discriminator under key 'D' (found {keys}); expected a "
                             f"stylegan2-ada-pytorch training pickle (network-snapshot-*.pkl or a pretrained/*.pkl)")
    init_kwargs = dict(rec.state.get("_init_kwargs") or {})
    kwargs = _stylegan2ada_kwargs(init_kwargs, f"{src_pkl}: D")
    tensors = {k: v.float() for k, v in collect_tensors(rec).items()}
    net = instantiate_with(lambda: StyleGAN2Discriminator(**kwargs), tensors, f"{src_pkl}: D -> StyleGAN2Discriminator{kwargs}")
    net._d2o_init = ("StyleGAN2Discriminator", kwargs)
    info = {"source_checkpoint": str(src_pkl), "source_key": "D", "source_init_kwargs": init_kwargs, **dict(extra or {})}
    return save_model(net, dst, extra=info)


def load_stylegan2_checkpoint(path: str | os.PathLike, img_resolution: int, label_dim: int = 0,
                              **expected) -> StyleGAN2Discriminator:
    """The StyleGAN2Discriminator stored at `path` (`convert_stylegan2ada_discriminator`), for images of
    `img_resolution` and `label_dim` classes. A conditional checkpoint loads into an unconditional discriminator
    without its label mapping (`mapping.*`) and with a freshly initialised output layer (`b4.out`, 1 logit instead of
    the projection onto the label embedding); the dropped names are in `.reinitialised`. `expected` kwargs (e.g. the
    experiment's channel_max) must equal the checkpoint's."""
    from safetensors.torch import load_file

    from d2o.edm.model_io import read_header

    header = read_header(path)
    if header["class"] != "StyleGAN2Discriminator":
        raise ValueError(f"{path}: holds a {header['class']}, not a StyleGAN2Discriminator; discriminator.init must name a "
                         f"checkpoint of kind {STYLEGAN2ADA_KIND!r}")
    kw = dict(header["init_kwargs"])
    if kw["img_resolution"] != img_resolution:
        raise ValueError(f"{path}: the checkpoint's discriminator takes {kw['img_resolution']} px images, the "
                         f"experiment's dataset has {img_resolution} px; use a checkpoint of this dataset")
    for key, value in expected.items():
        if kw.get(key) != value:
            raise ValueError(f"{path}: the checkpoint's discriminator has {key}={kw.get(key)!r}, the experiment "
                             f"{value!r}; change discriminator.{key} or the checkpoint")
    if label_dim not in (0, kw["label_dim"]):
        raise ValueError(f"{path}: the checkpoint's discriminator has {kw['label_dim']} classes, the experiment "
                         f"{label_dim}; use a checkpoint of this dataset")
    dropped = ("mapping.", "b4.out.") if label_dim != kw["label_dim"] else ()
    kw["label_dim"] = label_dim
    net = StyleGAN2Discriminator(**kw)
    tensors = load_file(str(path))
    net.reinitialised = sorted(k for k in net.state_dict() if dropped and k.startswith(dropped))
    missing, unexpected = net.load_state_dict({k: v for k, v in tensors.items() if not (dropped and k.startswith(dropped))},
                                              strict=False)
    if sorted(missing) != net.reinitialised or unexpected:
        raise ValueError(f"{path}: weights do not match StyleGAN2Discriminator{kw}: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}; convert the checkpoint again (rule convert_checkpoint)")
    net.d2o_extra = header.get("extra", {})
    return net


# ---------------------------------------------------------------------------------------------------------------

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
