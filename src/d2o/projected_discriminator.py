"""Projected GAN discriminator as used by D2O (spec §3; paper §3.3, App C).

Per backbone (spec §3.1-3.3):
    x in [-1, 1] -> optional DiffAugment -> [0, 1] -> normalise -> bilinear resize to 224 (align_corners False)
    -> frozen feature network (4 taps) -> CCM (random 1x1 convs to cout x (1, 2, 4, 8))
    -> CSM (random top-down fusion, output cout x (1, 1, 2, 4) at twice each tap's resolution)
    -> 4 trainable mini-discriminators (one per level) -> logits.
The feature network, CCM and CSM are random/pretrained and never trained (`Projection`, frozen, eval mode).
Only the mini-discriminators are trained: give `trainable_parameters()` to the optimiser.

Mini-discriminator depth follows D2O's `im_res=256` bookkeeping: nominal level sizes 128/64/32/16 with end size 8,
so 4/3/2/1 DownBlocks whatever the real size; at 224 input this gives 4x4 logit maps for EfficientNet/DeiT and
11x11 for VGG (whose taps are twice as large as the bookkeeping assumes). The demo `tiny` backbone is not resized;
its heads are sized from its true map sizes and its head channels are capped (see `_level_sizes`).

`forward(x, c)` returns a list over backbones of lists over heads of logits (B, P) (docs/ARCHITECTURE.md);
`forward_pair` scores reals and fakes of the D step with one projection pass.

Speed (the projections hold nearly all of D's FLOPs, projections and heads most of its kernel launches):
`compile_networks()` runs both through torch.compile for the G and D steps, `eager()` turns that off where a double
backward is needed (R1);
`cast_projection_weights(torch.bfloat16)` stores their conv/linear weights in the dtype bf16 autocast would cast them
to on every call.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from d2o.diffaug import diff_augment
from d2o.feature_networks import FeatureNetwork, build_feature_network
from d2o.spectral_norm import SNConv2d, prepare_weights

# Channel table of the mini-discriminators keyed by nominal map size (spec §3.3; PG's `nfc_midas`).
NFC = {1: 2048, 2: 1024, 4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32, 512: 16, 1024: 8}


# ---------------------------------------------------------------------------------------------------------------
# Frozen projection: feature network + CCM + CSM (spec §3.2).

class FuseUp(nn.Module):
    """CSM level: add the coarser fused map (if any), bilinear x2 upsample (align_corners True), 1x1 conv."""

    def __init__(self, channels: int, halve: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2 if halve else channels, 1)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + skip
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(x)


class RandomProjection(nn.Module):
    """The random, never-trained layers of one projection: the feature network's readout (DeiT only), the CCM
    (random 1x1 convs to cout x (1, 2, 4, 8)) and the CSM (random top-down fusion, cout x (1, 1, 2, 4) channels at
    twice each tap's resolution with expand=True). Built from the current torch RNG, in that order."""

    def __init__(self, features: FeatureNetwork, cout: int = 64, expand: bool = True):
        super().__init__()
        readout = features.make_readout()
        if readout is not None:
            self.readout = readout
        ccm_ch = [cout, cout * 2, cout * 4, cout * 8] if expand else [cout] * 4
        self.ccm = nn.ModuleList([nn.Conv2d(ci, co, 1) for ci, co in zip(features.channels, ccm_ch)])
        # Coarsest to finest: levels 3, 2, 1 halve channels when expanding; the finest level (0) never does.
        self.csm = nn.ModuleList([FuseUp(ccm_ch[i], halve=expand and i > 0) for i in range(4)])
        self.channels = tuple(ccm_ch[i] // 2 if expand and i > 0 else ccm_ch[i] for i in range(4))

    def forward(self, outs):
        taps = [r(t) for r, t in zip(self.readout, outs)] if hasattr(self, "readout") else outs
        mixed = [ccm(t) for ccm, t in zip(self.ccm, taps)]
        out = [None] * 4
        out[3] = self.csm[3](mixed[3])
        for i in (2, 1, 0):
            out[i] = self.csm[i](out[i + 1], mixed[i])
        return out


class Projection(nn.Module):
    """Frozen feature network + its random projection(s); never trained, always in eval mode.

    `seeds` None: one random projection from the current torch RNG (Projected GAN: one projection everywhere).
    `seeds` [s_0, ...]: one projection per seed, each built after torch.manual_seed(s_i) (D2O as coded: every GPU
    seeds torch per rank before building its feature network, so each GPU's projection is its own, spec §3.2);
    the feature network's weights are shared.

    `forward(x, ids)` takes the normalised, resized input of len(ids) equal consecutive slices (one per virtual GPU)
    and sends slice j through projection ids[j]; it returns four maps with `channels` channels.
    """

    def __init__(self, features: FeatureNetwork, cout: int = 64, expand: bool = True, seeds=None):
        super().__init__()
        self.features = features
        if seeds is None:
            self.random = nn.ModuleList([RandomProjection(features, cout, expand)])
        else:
            copies = []
            for s in seeds:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(s))
                    copies.append(RandomProjection(features, cout, expand))
            self.random = nn.ModuleList(copies)
        self.channels = self.random[0].channels
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Projection":
        return super().train(False)

    def forward(self, x, ids=(0,)):
        outs = self.features(x)
        if len(ids) == 1:
            return self.random[ids[0]](outs)
        slices = [o.chunk(len(ids)) for o in outs]
        parts = [self.random[p]([s[j] for s in slices]) for j, p in enumerate(ids)]
        return [torch.cat([part[level] for part in parts]) for level in range(4)]


# ---------------------------------------------------------------------------------------------------------------
# Trainable mini-discriminators (spec §3.3-3.4).

class GroupedBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same state_dict) whose training-mode batch statistics can be taken over consecutive groups of
    `group` samples, as if each group were on its own GPU (PG/D2O use per-GPU BatchNorm, not SyncBN). With
    `group` None or equal to the batch it is nn.BatchNorm2d. The running statistics follow the first group alone
    (they are never used in training: D runs in training mode throughout)."""

    group: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        g = self.group
        if not self.training or g is None or g == n:
            return super().forward(x)
        if n % g:
            raise ValueError(f"d2o.projected_discriminator: batch {n} is not a multiple of the BatchNorm group {g}")
        k = n // g
        with torch.no_grad():
            super().forward(x[:g])  # running statistics and num_batches_tracked, from the first group
        # (k groups x g samples, C) -> (g samples, k*C "channels"): one batch_norm call normalises each group apart
        xr = x.reshape(k, g, ch, h, w).transpose(0, 1).reshape(g, k * ch, h, w)
        y = F.batch_norm(xr, None, None, self.weight.repeat(k), self.bias.repeat(k), True, 0.0, self.eps)
        y = y.reshape(g, k, ch, h, w).transpose(0, 1).reshape(n, ch, h, w)
        return y.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else y


class DownBlock(nn.Sequential):
    """Spectral-norm 4x4 stride-2 conv (bias) + BatchNorm2d (batch statistics in train mode) + LeakyReLU 0.2."""

    def __init__(self, cin: int, cout: int):
        super().__init__(SNConv2d(cin, cout, 4, 2, 1, bias=True), GroupedBatchNorm2d(cout), nn.LeakyReLU(0.2))


class FullyConnectedLayer(nn.Module):
    """StyleGAN2 fully connected layer with equalised learning rate.

    weight ~ N(0, 1) / lr_multiplier, used as weight * lr_multiplier / sqrt(in_features); bias used as
    bias * lr_multiplier; activation 'lrelu' = leaky ReLU 0.2 times sqrt(2) (StyleGAN2 bias_act gain).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"d2o.projected_discriminator: FullyConnectedLayer activation {activation!r} "
                             f"not supported; use 'linear' or 'lrelu'")
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        x = F.linear(x, self.weight.to(x.dtype) * self.weight_gain, b)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
        return x


class MiniDiscriminator(nn.Module):
    """One head on one feature level (spec §3.3).

    `num_down` DownBlocks following the channel table NFC (first entry = input channels; entries optionally
    capped at `channel_max`, not done in D2O), then a spectral-norm
    conv with kernel `kernel`, no bias, no padding: 1 output channel (unconditional) or `cmap_dim` channels
    (conditional, spec §3.4). Conditional logit = sum_c(h * cmap) / sqrt(cmap_dim) at every position, with
    cmap = FullyConnectedLayer(320 -> cmap_dim, lrelu)(Embedding(1000, 320)[argmax c]).
    """

    def __init__(self, cin: int, start_sz: int, end_sz: int, label_dim: int = 0, cmap_dim: int = 64,
                 embed_num: int = 1000, embed_dim: int = 320, channel_max: int | None = None):
        super().__init__()
        nfc = {k: v if channel_max is None else min(v, channel_max) for k, v in NFC.items()}
        nfc[start_sz] = cin
        layers, sz = [], start_sz
        while sz > end_sz:
            layers.append(DownBlock(nfc[sz], nfc[sz // 2]))
            sz //= 2
        self.main = nn.Sequential(*layers)
        self.num_down = len(layers)
        self.kernel = 4 if end_sz >= 8 else max(1, end_sz // 2)
        self.label_dim, self.cmap_dim = label_dim, cmap_dim
        self.cls = SNConv2d(nfc[end_sz], cmap_dim if label_dim else 1, self.kernel, 1, 0, bias=False)
        if label_dim:
            if label_dim > embed_num:
                raise ValueError(f"d2o.projected_discriminator: label_dim {label_dim} exceeds the {embed_num} "
                                 f"class embeddings")
            self.embed = nn.Embedding(embed_num, embed_dim)
            self.embed_proj = FullyConnectedLayer(embed_dim, cmap_dim, activation="lrelu")

    def forward(self, x, c=None):
        h = self.cls(self.main(x))
        if self.label_dim:
            if c is None:
                raise ValueError("d2o.projected_discriminator: conditional discriminator needs one-hot labels c")
            cmap = self.embed_proj(self.embed(c.argmax(dim=1)))[:, :, None, None]
            h = (h * cmap.to(h.dtype)).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return h.flatten(1)


def _level_sizes(features: FeatureNetwork, img_resolution: int | None) -> list[int]:
    """Nominal CSM output sizes used to size the heads (spec §3.3).

    Real backbones: D2O's fixed im_res=256 bookkeeping, [256 // 4, // 8, // 16, // 32] doubled by the CSM
    = [128, 64, 32, 16] regardless of the backbone's true strides. Backbones that are not resized (`tiny`):
    the true sizes, 2 * img_resolution / stride.
    """
    if features.resize:
        return [2 * (256 // s) for s in (4, 8, 16, 32)]
    if img_resolution is None:
        raise ValueError(f"d2o.projected_discriminator: backbone {features.name!r} is not resized; "
                         f"pass img_resolution")
    return [2 * img_resolution // s for s in features.strides]


def _nearest_key(sz: int) -> int:
    keys = np.array(sorted(NFC))
    return int(keys[np.argmin(abs(keys - sz))])


class MultiScaleHeads(nn.Module):
    """`num_discs` mini-discriminators on the first `num_discs` levels of one backbone (spec §3.3)."""

    def __init__(self, channels, sizes, num_discs: int = 4, label_dim: int = 0, cmap_dim: int = 64,
                 channel_max: int | None = None):
        super().__init__()
        if not 1 <= num_discs <= 4:
            raise ValueError(f"d2o.projected_discriminator: num_discs must be 1..4, got {num_discs}")
        sizes = [_nearest_key(s) for s in sizes[:num_discs]]
        end_sz = 8 if sizes[-1] >= 8 else sizes[-1]
        self.heads = nn.ModuleList([MiniDiscriminator(ch, sz, end_sz, label_dim=label_dim, cmap_dim=cmap_dim,
                                                      channel_max=channel_max)
                                    for ch, sz in zip(channels[:num_discs], sizes)])

    def forward(self, feats, c=None):
        prepare_weights(self)  # the spectral-norm power iterations of all heads at once (d2o.spectral_norm)
        return [head(f, c) for head, f in zip(self.heads, feats)]


class ProjectedDiscriminator(nn.Module):
    """D2O's discriminator (spec §3). See the module docstring.

    Args:
        backbones: feature networks, e.g. ["vgg16_bn", "tf_efficientnet_lite0"] (CIFAR-10, `--backbone=1`) or
            ["deit_base_distilled_patch16_224", "tf_efficientnet_lite0"] (AFHQv2/FFHQ/ImageNet, `--backbone=0`).
        resolution: side the real backbones' inputs are resized to (224 in D2O).
        label_dim: number of classes (0 = unconditional).
        pretrained: load torchvision/timm ImageNet weights (False = random-init, offline).
        weights: optional {backbone: state_dict path} for the feature networks (overrides pretrained).
        diffaug, diffaug_policy: optional DiffAugment before normalisation (independent draw per backbone).
        cout, expand: CCM width and channel expansion (spec §3.2).
        num_discs: mini-discriminators per backbone (4).
        cmap_dim: conditional head width (64).
        embed_weights: optional file with the (1000, 320) ImageNet class embedding (see `load_class_embedding`); D2O
            loads StyleGAN-XL's tf_efficientnet_lite0 embedding into every head (spec §3.4).
        img_resolution: image resolution; required for backbones that are not resized (`tiny`).
        head_channel_max: cap on the mini-discriminator channel table (None = D2O's table, uncapped, for the real
            backbones; `tiny` defaults to 4 * cout, because its small maps end at sizes where the table asks
            for 1024-2048 channels).
        projection_seeds: None (one random projection per backbone, from the current RNG: Projected GAN) or one
            seed per projection copy (D2O as coded: each GPU its own; `use_projections` picks the copies of a pass).
            Backbone b's copy i is built after torch.manual_seed(seed_i + b); the feature networks are shared.
    """

    def __init__(self, backbones=("vgg16_bn", "tf_efficientnet_lite0"), resolution: int = 224, label_dim: int = 0,
                 pretrained: bool = True, weights: dict | None = None, diffaug: bool = False,
                 diffaug_policy: str = "color,translation,cutout", cout: int = 64, expand: bool = True,
                 num_discs: int = 4, cmap_dim: int = 64, embed_weights: str | os.PathLike | None = None,
                 img_resolution: int | None = None, head_channel_max: int | None = None, projection_seeds=None):
        super().__init__()
        weights = dict(weights or {})
        unknown = set(weights) - set(backbones)
        if unknown:
            raise ValueError(f"d2o.projected_discriminator: weights given for backbones {sorted(unknown)} "
                             f"not in backbones={list(backbones)}")
        self.backbones = list(backbones)
        self.resolution, self.label_dim = resolution, label_dim
        self.diffaug, self.diffaug_policy = diffaug, diffaug_policy
        self.projections = nn.ModuleDict()
        self.discriminators = nn.ModuleDict()
        self.projection_ids = (0,)  # the projection copy of each virtual GPU of the next pass (use_projections)
        for b, name in enumerate(self.backbones):
            feat = build_feature_network(name, pretrained=pretrained and name != "tiny", weights=weights.get(name))
            seeds = None if projection_seeds is None else [int(s) + b for s in projection_seeds]
            proj = Projection(feat, cout=cout, expand=expand, seeds=seeds)
            self.projections[name] = proj
            cap = head_channel_max if head_channel_max is not None or feat.resize else 4 * cout
            self.discriminators[name] = MultiScaleHeads(proj.channels, _level_sizes(feat, img_resolution),
                                                        num_discs=num_discs, label_dim=label_dim, cmap_dim=cmap_dim,
                                                        channel_max=cap)
            for key in ("mean", "std"):  # float32 as used, and float64 for double-precision runs (.double() would
                stats = feat.normstats[key]  # otherwise widen the float32-rounded constants, 3e-8 off)
                self.register_buffer(f"{key}_{name}", torch.tensor(stats).view(1, 3, 1, 1), persistent=False)
                self.register_buffer(f"{key}64_{name}", torch.tensor(stats, dtype=torch.float64).view(1, 3, 1, 1),
                                     persistent=False)
        if embed_weights is not None and label_dim:
            self.load_class_embedding(embed_weights)
        self._compiled: dict = {}   # torch.compile'd projections and heads, outside the module tree (state_dict unchanged)
        self._use_compiled = True

    def use_projections(self, ids) -> None:
        """The next calls' batches are len(ids) equal slices (virtual GPUs); slice j goes through projection copy
        ids[j] of every backbone (copies: `projection_seeds`)."""
        ids = tuple(int(i) for i in ids)
        n = len(next(iter(self.projections.values())).random)
        if not ids or any(not 0 <= i < n for i in ids):
            raise ValueError(f"d2o.projected_discriminator: projection ids {ids} for {n} projection copies")
        self.projection_ids = ids

    def set_batchnorm_group(self, group: int | None) -> None:
        """Take the heads' BatchNorm statistics over consecutive groups of `group` samples (one virtual GPU each)."""
        for m in self.discriminators.modules():
            if isinstance(m, GroupedBatchNorm2d):
                m.group = group

    def compile_networks(self, **compile_kwargs) -> None:
        """Use torch.compile'd projections and heads in `forward` and `forward_pair` (kwargs go to torch.compile, e.g.
        mode="reduce-overhead"). The heads' spectral-norm power iterations and BatchNorm statistics update their
        buffers inside the compiled graphs, as in eager.

        The compiled graphs support forward and backward but not a double backward: run R1 inside `eager()`."""
        compile_kwargs.setdefault("dynamic", False)  # batch B in the G step, 2B in forward_pair: two static graphs
        self._compiled = {("projection", name): torch.compile(self.projections[name], **compile_kwargs)
                          for name in self.backbones}
        self._compiled.update({("heads", name): torch.compile(self.discriminators[name], **compile_kwargs)
                               for name in self.backbones})

    @contextlib.contextmanager
    def eager(self):
        """Within this block `forward` runs the eager projections and heads (same parameters) even when compiled ones
        exist."""
        saved, self._use_compiled = self._use_compiled, False
        try:
            yield self
        finally:
            self._use_compiled = saved

    @torch.no_grad()
    def cast_projection_weights(self, dtype: torch.dtype) -> None:
        """Store the frozen projections' conv / transposed-conv / linear weights and biases in `dtype`.

        Under autocast to `dtype` these layers see exactly the values autocast would cast them to on every call, so
        the results are bitwise unchanged and the per-call weight casts disappear. Normalisation layers keep fp32
        (autocast runs them in fp32 or with fp32 statistics). Call D only under autocast to `dtype` afterwards."""
        for proj in self.projections.values():
            for m in proj.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    m.weight.data = m.weight.data.to(dtype)
                    if m.bias is not None:
                        m.bias.data = m.bias.data.to(dtype)

    def load_class_embedding(self, path: str | os.PathLike) -> None:
        """Copy a (1000, 320) class-embedding matrix into every conditional head (one copy each, trainable).

        `path`: a `d2o.class_embedding.convert_class_embedding` safetensors file (tensor "weight"), StyleGAN-XL/D2O's
        `in_embeddings/tf_efficientnet_lite0.pkl` itself (read without running code from it), or a `torch.save`d
        tensor / dict with 'weight' or 'embed.weight'. As in D2O, every head (all backbones, all levels) gets its own
        copy of all 1000 rows whatever `label_dim`; a C-class experiment looks up rows 0..C-1 (argmax of the one-hot
        label: CIFAR-10 starts from ImageNet rows 0-9), the other rows get no gradient (spec §3.4)."""
        from d2o.class_embedding import load_class_embedding_file

        if not self.label_dim:
            raise ValueError("d2o.projected_discriminator: load_class_embedding on an unconditional discriminator")
        obj = load_class_embedding_file(path)
        for disc in self.discriminators.values():
            for head in disc.heads:
                if obj.shape != head.embed.weight.shape:
                    raise ValueError(f"d2o.projected_discriminator: embedding in {path} has shape "
                                     f"{tuple(obj.shape)}, expected {tuple(head.embed.weight.shape)}")
                with torch.no_grad():
                    head.embed.weight.copy_(obj)

    def trainable_parameters(self):
        """Parameters of the mini-discriminators only (feature networks, CCM and CSM are never trained)."""
        return list(self.discriminators.parameters())

    def train(self, mode: bool = True) -> "ProjectedDiscriminator":
        super().train(mode)
        self.projections.train(False)
        return self

    def preprocess(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """[-1, 1] image -> optional DiffAugment -> [0, 1] -> normalise -> resize (spec §3.1)."""
        if self.diffaug:
            x = diff_augment(x, self.diffaug_policy)
        x = (x + 1) / 2
        wide = "64" if x.dtype == torch.float64 else ""
        x = (x - getattr(self, f"mean{wide}_{name}")) / getattr(self, f"std{wide}_{name}")
        if self.projections[name].features.resize and tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return x

    def _check_labels(self, x, c) -> None:
        if self.label_dim and (c is None or c.shape != (x.shape[0], self.label_dim)):
            raise ValueError(f"d2o.projected_discriminator: expected one-hot labels of shape "
                             f"({x.shape[0]}, {self.label_dim}), got {None if c is None else tuple(c.shape)}")

    def _part(self, kind: str, name: str) -> nn.Module:
        """The projection or the heads of backbone `name`: the compiled ones, if any, outside `eager()`."""
        if self._compiled and self._use_compiled:
            return self._compiled[kind, name]
        return self.projections[name] if kind == "projection" else self.discriminators[name]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        self._check_labels(x, c)
        ids = self.projection_ids
        return [self._part("heads", name)(self._part("projection", name)(self.preprocess(x, name), ids), c if self.label_dim else None)
                for name in self.backbones]

    def forward_pair(self, x: torch.Tensor, c: torch.Tensor | None, y: torch.Tensor, cy: torch.Tensor | None):
        """`(self(x, c), self(y, cy))` with one frozen-projection pass per backbone over x and y stacked (half the
        projection launches of the D step, at twice the batch). Everything that is not per-sample stays separate:
        DiffAugment draws in the same order as the two calls (all of x's backbones, then y's), and the heads (batch
        statistics of BatchNorm, spectral-norm power iterations) run on x, then on y."""
        self._check_labels(x, c)
        self._check_labels(y, cy)
        px = [self.preprocess(x, name) for name in self.backbones]
        py = [self.preprocess(y, name) for name in self.backbones]
        lx, ly = [], []
        for name, a, b in zip(self.backbones, px, py):
            feats = self._part("projection", name)(torch.cat([a, b]), self.projection_ids * 2)
            heads = self._part("heads", name)
            lx.append(heads([f[:len(a)] for f in feats], c if self.label_dim else None))
            ly.append(heads([f[len(a):] for f in feats], cy if self.label_dim else None))
        return lx, ly
