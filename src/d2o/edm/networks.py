"""EDM network architectures and preconditioners, re-implemented for the D2O reproduction.

The layers, U-Nets (DDPM++/NCSN++ `SongUNet`, ADM `DhariwalUNet`) and preconditioners follow NVlabs/edm
`training/networks.py` exactly in constructor keywords, defaults, parameter/buffer names and shapes and forward
semantics (spec §1.2), so that the `ema` network of an EDM training pickle loads with `strict=True` and produces
the same outputs (checked against EDM itself by tests/test_edm_networks.py).  `D2OPrecond` is the one-step
generator wrapper of the paper (spec §1.4, [P App C]).

All modules can be built under `torch.device("meta")` (no real allocation), e.g. to count parameters.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.nn.functional import silu

__all__ = [
    "weight_init", "Linear", "Conv2d", "GroupNorm", "AttentionOp", "UNetBlock", "PositionalEmbedding",
    "FourierEmbedding", "SongUNet", "DhariwalUNet", "VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond",
    "D2OPrecond", "EDM_CLASS_MAP",
]

# ----------------------------------------------------------------------------------------------------------------
# Initialisation.

_SKIP_INIT = False


@contextlib.contextmanager
def skip_init():
    """Build networks without random initialisation (uninitialised storage, and no arithmetic on the meta device,
    whose first use costs about a second): for loaders that assign every parameter and buffer right after."""
    global _SKIP_INIT
    previous, _SKIP_INIT = _SKIP_INIT, True
    try:
        yield
    finally:
        _SKIP_INIT = previous


def _init_param(shape, fans, scale):
    return torch.nn.Parameter(torch.empty(*shape) if _SKIP_INIT else weight_init(shape, **fans) * scale)


def weight_init(shape, mode, fan_in, fan_out):
    """Random tensor of `shape` for EDM's init modes (xavier/kaiming, uniform/normal)."""
    if mode == "xavier_uniform":
        return np.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return np.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return np.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f'd2o.edm.networks.weight_init: unknown init mode "{mode}"; use xavier_uniform, '
                     f'xavier_normal, kaiming_uniform or kaiming_normal')

# ----------------------------------------------------------------------------------------------------------------
# Layers.

class Linear(torch.nn.Module):
    """Fully connected layer; `weight` (out, in), optional `bias` (out,). Weights are cast to the input dtype."""

    def __init__(self, in_features, out_features, bias=True, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = _init_param([out_features, in_features], fans, init_weight)
        self.bias = _init_param([out_features], fans, init_bias) if bias else None

    def forward(self, x):
        y = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            y = y.add_(self.bias.to(x.dtype))
        return y


class Conv2d(torch.nn.Module):
    """2-D convolution with optional 2x up/down resampling by a separable FIR filter.

    `kernel=0` gives a pure resampling layer (no weight). The buffer `resample_filter` (1, 1, k, k) is the outer
    product of `resample_filter` normalised to unit sum; it exists (non-None) only when `up` or `down`.
    Upsampling is a stride-2 transposed depthwise convolution with the filter times 4; downsampling a stride-2
    depthwise convolution. `fused_resample` runs the weight convolution first when downsampling and last when
    upsampling, with the paddings merged, as EDM does for the NCSN++ residual encoder.
    """

    def __init__(self, in_channels, out_channels, kernel, bias=True, up=False, down=False,
                 resample_filter=[1, 1], fused_resample=False, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        if up and down:
            raise ValueError("d2o.edm.networks.Conv2d: up and down cannot both be set")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = _init_param([out_channels, in_channels, kernel, kernel], fans, init_weight) if kernel else None
        self.bias = _init_param([out_channels], fans, init_bias) if kernel and bias else None
        k = len(resample_filter)
        if _SKIP_INIT:
            filt = torch.empty(1, 1, k, k)
        else:
            taps = torch.as_tensor(resample_filter, dtype=torch.float32)
            filt = torch.outer(taps, taps)[None, None] / taps.sum().square()
        self.register_buffer("resample_filter", filt if (up or down) else None)

    def forward(self, x):
        F = torch.nn.functional
        w = self.weight.to(x.dtype) if self.weight is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0

        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, (f * 4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                   stride=2, padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, (f * 4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if b is not None:
            x = x.add_(b.reshape(1, -1, 1, 1))
        return x


class GroupNorm(torch.nn.Module):
    """Group normalisation with min(num_groups, num_channels // min_channels_per_group) groups.

    A bfloat16 input (only D2O's bf16 generator produces one: EDM itself runs float16) is normalised in float32 and
    cast back, as D2O's training/networks.py does (spec §1.2); other dtypes as EDM."""

    def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        if x.dtype == torch.bfloat16:
            return torch.nn.functional.group_norm(x.to(torch.float32), num_groups=self.num_groups, weight=self.weight,
                                                  bias=self.bias, eps=self.eps).to(x.dtype)
        return torch.nn.functional.group_norm(x, num_groups=self.num_groups, weight=self.weight.to(x.dtype),
                                              bias=self.bias.to(x.dtype), eps=self.eps)


class AttentionOp(torch.autograd.Function):
    """Attention weights softmax_k(q . k / sqrt(C)) over (N, C, Q) x (N, C, K) -> (N, Q, K).

    Computed in float32 whatever the input dtype (also for float64 inputs, as EDM does), returned in q's dtype.
    """

    @staticmethod
    def forward(ctx, q, k):
        # divide by sqrt(C) (not multiply by its inverse): bit-identical to EDM in float32
        w = torch.einsum("ncq,nck->nqk", q.to(torch.float32), (k / np.sqrt(k.shape[1])).to(torch.float32))
        w = w.softmax(dim=2).to(q.dtype)
        ctx.save_for_backward(q, k, w)
        return w

    @staticmethod
    def backward(ctx, dw):
        q, k, w = ctx.saved_tensors
        w32, dw32 = w.to(torch.float32), dw.to(torch.float32)
        dlogits = w32 * (dw32 - (dw32 * w32).sum(dim=2, keepdim=True))   # softmax Jacobian-vector product
        dq = torch.einsum("nck,nqk->ncq", k.to(torch.float32), dlogits).to(q.dtype) / np.sqrt(k.shape[1])
        dk = torch.einsum("ncq,nqk->nck", q.to(torch.float32), dlogits).to(k.dtype) / np.sqrt(k.shape[1])
        return dq, dk


class UNetBlock(torch.nn.Module):
    """Residual block shared by DDPM++, NCSN++ and ADM: norm0-conv0, embedding (shift or scale/shift) affine,
    norm1-dropout-conv1, skip path, optional multi-head self-attention (norm2, qkv, proj)."""

    def __init__(self, in_channels, out_channels, emb_channels, up=False, down=False, attention=False,
                 num_heads=None, channels_per_head=64, dropout=0, skip_scale=1, eps=1e-5,
                 resample_filter=[1, 1], resample_proj=False, adaptive_scale=True,
                 init=dict(), init_zero=dict(init_weight=0), init_attn=None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down, resample_filter=resample_filter, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            skip_kernel = 1 if (resample_proj or out_channels != in_channels) else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=skip_kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **(init_attn if init_attn is not None else init))
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x, emb):
        residual = x
        x = self.conv0(silu(self.norm0(x)))

        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(chunks=2, dim=1)
            x = silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = silu(self.norm1(x.add_(params)))

        x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
        x = x.add_(self.skip(residual) if self.skip is not None else residual)
        x = x * self.skip_scale

        if self.num_heads:
            # qkv channels are laid out as (head, channel-in-head, {q,k,v}).
            n, c = x.shape[0], x.shape[1]
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1).unbind(2)
            w = AttentionOp.apply(q, k)
            a = torch.einsum("nqk,nck->ncq", w, v)
            x = self.proj(a.reshape(*x.shape)).add_(x)
            x = x * self.skip_scale
        return x

# ----------------------------------------------------------------------------------------------------------------
# Noise-level embeddings.

class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal embedding [cos(x f), sin(x f)], f_j = (1/max_positions)^(j / (C/2 - endpoint)) (DDPM++, ADM)."""

    def __init__(self, num_channels, max_positions=10000, endpoint=False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x):
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(torch.nn.Module):
    """Random Fourier features [cos(2 pi x f), sin(2 pi x f)], f ~ N(0, scale^2) stored in buffer `freqs` (NCSN++)."""

    def __init__(self, num_channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.empty(num_channels // 2) if _SKIP_INIT else torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * np.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)

# ----------------------------------------------------------------------------------------------------------------
# U-Nets.

class SongUNet(torch.nn.Module):
    """DDPM++ / NCSN++ U-Net of Song et al. as re-implemented in EDM (spec §1.2).

    Module names: `map_noise`, `map_label`, `map_augment`, `map_layer0/1`, encoder `enc['{r}x{r}_conv|_down|_block{i}
    |_aux_down|_aux_skip|_aux_residual']`, decoder `dec['{r}x{r}_in0|_in1|_up|_block{i}|_aux_up|_aux_norm|_aux_conv']`.
    """

    def __init__(self,
        img_resolution,                     # Image resolution at input/output.
        in_channels,                        # Colour channels at input.
        out_channels,                       # Colour channels at output.
        label_dim           = 0,            # Number of classes, 0 = unconditional.
        augment_dim         = 0,            # Augmentation label size, 0 = no augmentation.
        model_channels      = 128,          # Base channel count.
        channel_mult        = [1, 2, 2, 2], # Channel multiplier per resolution.
        channel_mult_emb    = 4,            # Embedding size multiplier.
        num_blocks          = 4,            # Residual blocks per resolution.
        attn_resolutions    = [16],         # Resolutions with self-attention.
        dropout             = 0.10,         # Dropout probability.
        label_dropout       = 0,            # Class-label dropout (classifier-free guidance).
        embedding_type      = "positional", # 'positional' (DDPM++) or 'fourier' (NCSN++).
        channel_mult_noise  = 1,            # Noise embedding size multiplier: 1 DDPM++, 2 NCSN++.
        encoder_type        = "standard",   # 'standard' (DDPM++), 'skip' or 'residual' (NCSN++).
        decoder_type        = "standard",   # 'standard' or 'skip'.
        resample_filter     = [1, 1],       # [1,1] DDPM++, [1,3,3,1] NCSN++.
    ):
        if embedding_type not in ("fourier", "positional"):
            raise ValueError(f"SongUNet: embedding_type must be 'fourier' or 'positional', got {embedding_type!r}")
        if encoder_type not in ("standard", "skip", "residual"):
            raise ValueError(f"SongUNet: encoder_type must be 'standard', 'skip' or 'residual', got {encoder_type!r}")
        if decoder_type not in ("standard", "skip"):
            raise ValueError(f"SongUNet: decoder_type must be 'standard' or 'skip', got {decoder_type!r}")
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2))
        block_kwargs = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=np.sqrt(0.5), eps=1e-6,
                            resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                            init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping network.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder.
        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, kernel=0, down=True, resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, kernel=3, down=True, resample_filter=resample_filter,
                                                                   fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for name, block in self.enc.items() if "aux" not in name]

        # Decoder.
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block_kwargs)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, kernel=0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        # Mapping: noise embedding with its two halves swapped to [sin, cos], plus label/augment terms.
        emb = self.map_noise(noise_labels)
        half = emb.shape[1] // 2
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=1)
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels * np.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer0(emb))
        emb = silu(self.map_layer1(emb))

        # Encoder; `aux` carries the downsampled input (skip) or the residual stream (residual).
        skips = []
        aux = x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / np.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        # Decoder; the output is the sum of the aux_conv heads (one for 'standard', one per level for 'skip').
        aux = None
        tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux


class DhariwalUNet(torch.nn.Module):
    """ADM U-Net of Dhariwal & Nichol as re-implemented in EDM (spec §1.2): adaptive scale/shift, 64 channels per
    attention head, bias-free class map, positional noise embedding."""

    def __init__(self,
        img_resolution,                     # Image resolution at input/output.
        in_channels,                        # Colour channels at input.
        out_channels,                       # Colour channels at output.
        label_dim           = 0,            # Number of classes, 0 = unconditional.
        augment_dim         = 0,            # Augmentation label size, 0 = no augmentation.
        model_channels      = 192,          # Base channel count.
        channel_mult        = [1, 2, 3, 4], # Channel multiplier per resolution.
        channel_mult_emb    = 4,            # Embedding size multiplier.
        num_blocks          = 3,            # Residual blocks per resolution.
        attn_resolutions    = [32, 16, 8],  # Resolutions with self-attention.
        dropout             = 0.10,         # Dropout probability.
        label_dropout       = 0,            # Class-label dropout (classifier-free guidance).
    ):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=np.sqrt(1 / 3), init_bias=np.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block_kwargs = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        # Mapping network.
        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal", init_weight=np.sqrt(label_dim))
                          if label_dim else None)

        # Encoder.
        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for block in self.enc.values()]

        # Decoder.
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        self.out_norm = GroupNorm(num_channels=cout)
        self.out_conv = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer0(emb))
        emb = self.map_layer1(emb)
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels)
        emb = silu(emb)

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(silu(self.out_norm(x)))


_MODEL_TYPES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


def _build_model(model_type, **kwargs):
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"d2o.edm.networks: unknown model_type {model_type!r}; use one of {sorted(_MODEL_TYPES)}")
    return _MODEL_TYPES[model_type](**kwargs)

# ----------------------------------------------------------------------------------------------------------------
# Preconditioners. D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, labels).

class _Precond(torch.nn.Module):
    """Shared pieces of EDM's wrappers: attributes, label handling, execution dtype, F evaluation."""

    reduced_dtype = torch.float16   # dtype of the U-Net when use_fp16 on CUDA

    def _common_init(self, img_resolution, img_channels, label_dim, use_fp16):
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16

    def _labels(self, class_labels, x):
        if self.label_dim == 0:
            return None
        if class_labels is None:
            return torch.zeros([1, self.label_dim], device=x.device)
        return class_labels.to(torch.float32).reshape(-1, self.label_dim)

    def _dtype(self, x, force_fp32):
        return self.reduced_dtype if (self.use_fp16 and not force_fp32 and x.device.type == "cuda") else torch.float32

    def _run_model(self, x_in, c_noise, class_labels, dtype, model_kwargs):
        F_x = self.model(x_in.to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        if F_x.dtype != dtype:  # under autocast the U-Net returns the autocast dtype; preconditioning stays in fp32
            if not torch.is_autocast_enabled(x_in.device.type):
                raise RuntimeError(f"{type(self).__name__}: model returned {F_x.dtype}, expected {dtype}")
            F_x = F_x.to(dtype)
        return F_x

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


class VPPrecond(_Precond):
    """Variance-preserving preconditioning (Song et al. VP SDE), EDM Table 1."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, beta_d=19.9, beta_min=0.1,
                 M=1000, epsilon_t=1e-5, model_type="SongUNet", **model_kwargs):
        super().__init__()
        self._common_init(img_resolution, img_channels, label_dim, use_fp16)
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        with torch.device("cpu"):   # real numbers also under a meta-device context
            self.sigma_min = float(self.sigma(epsilon_t))
            self.sigma_max = float(self.sigma(1))
        self.model = _build_model(model_type, img_resolution=img_resolution, in_channels=img_channels,
                                  out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = self._labels(class_labels, x)
        dtype = self._dtype(x, force_fp32)
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        F_x = self._run_model(c_in * x, c_noise, class_labels, dtype, model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d


class VEPrecond(_Precond):
    """Variance-exploding preconditioning (Song et al. VE SDE), EDM Table 1."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0.02, sigma_max=100,
                 model_type="SongUNet", **model_kwargs):
        super().__init__()
        self._common_init(img_resolution, img_channels, label_dim, use_fp16)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.model = _build_model(model_type, img_resolution=img_resolution, in_channels=img_channels,
                                  out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = self._labels(class_labels, x)
        dtype = self._dtype(x, force_fp32)
        c_skip = 1
        c_out = sigma
        c_in = 1
        c_noise = (0.5 * sigma).log()
        F_x = self._run_model(c_in * x, c_noise, class_labels, dtype, model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)


class iDDPMPrecond(_Precond):
    """Improved-DDPM preconditioning with the discrete noise levels `u` (buffer, M+1 values), EDM Table 1."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, C_1=0.001, C_2=0.008, M=1000,
                 model_type="DhariwalUNet", **model_kwargs):
        super().__init__()
        self._common_init(img_resolution, img_channels, label_dim, use_fp16)
        self.C_1 = C_1
        self.C_2 = C_2
        self.M = M
        self.model = _build_model(model_type, img_resolution=img_resolution, in_channels=img_channels,
                                  out_channels=img_channels * 2, label_dim=label_dim, **model_kwargs)
        # u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j-1)/abar(j), C_1) - 1), in float32 on the CPU
        # (also under a meta-device context, so sigma_min/sigma_max are real numbers).
        target_device = torch.empty(0).device
        with torch.device("cpu"):
            u = torch.zeros(M + 1)
            for j in range(M, 0, -1):
                u[j - 1] = ((u[j] ** 2 + 1) / (self.alpha_bar(j - 1) / self.alpha_bar(j)).clip(min=C_1) - 1).sqrt()
        self.sigma_min = float(u[M - 1])
        self.sigma_max = float(u[0])
        self.register_buffer("u", u.to(target_device))

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = self._labels(class_labels, x)
        dtype = self._dtype(x, force_fp32)
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        F_x = self._run_model(c_in * x, c_noise, class_labels, dtype, model_kwargs)
        return c_skip * x + c_out * F_x[:, :self.img_channels].to(torch.float32)

    def alpha_bar(self, j):
        j = torch.as_tensor(j)
        return (0.5 * np.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def round_sigma(self, sigma, return_index=False):
        """Nearest level in `u` (its index with return_index=True), same shape and device as sigma."""
        sigma = torch.as_tensor(sigma)
        dist = torch.cdist(sigma.to(self.u.device).to(torch.float32).reshape(1, -1, 1), self.u.reshape(1, -1, 1))
        index = dist.argmin(2)
        result = index if return_index else self.u[index.flatten()].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)


class EDMPrecond(_Precond):
    """EDM preconditioning (EDM Table 1): c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2),
    c_in = 1/sqrt(sd^2+s^2), c_noise = ln(s)/4. Used by all checkpoints of spec §1.1."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0, sigma_max=float("inf"),
                 sigma_data=0.5, model_type="DhariwalUNet", **model_kwargs):
        super().__init__()
        self._common_init(img_resolution, img_channels, label_dim, use_fp16)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.model = _build_model(model_type, img_resolution=img_resolution, in_channels=img_channels,
                                  out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = self._labels(class_labels, x)
        dtype = self._dtype(x, force_fp32)
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self._run_model(c_in * x, c_noise, class_labels, dtype, model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)


class D2OPrecond(_Precond):
    """D2O generator wrapper (spec §1.4, [P App C], [D2O:training/networks.py] D2OPrecond).

    Consistency-Model boundary coefficients with eps = 0.002 and EDM's input/noise scaling:
      c_skip = sd^2 / ((s - eps)^2 + sd^2),  c_out = sd (s - eps) / sqrt(sd^2 + s^2),
      c_in = 1 / sqrt(sd^2 + s^2),          c_noise = ln(s) / 4,
    so D(x, eps) = x. The one-step generator is G(z) = D(80 z, 80). As the authors coded it, `x` keeps its dtype
    (float64 latents give a float64 skip term), and `use_fp16` runs the U-Net in bfloat16 on CUDA.
    The parameter names equal EDMPrecond's (`model.*`), so EDM checkpoints load into it.
    """

    reduced_dtype = torch.bfloat16

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0, sigma_max=float("inf"),
                 sigma_data=0.5, model_type="DhariwalUNet", eps=2e-3, **model_kwargs):
        super().__init__()
        self._common_init(img_resolution, img_channels, label_dim, use_fp16)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.eps = eps
        self.model = _build_model(model_type, img_resolution=img_resolution, in_channels=img_channels,
                                  out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def coefficients(self, sigma):
        """(c_skip, c_out, c_in, c_noise) for a float32 sigma tensor (spec §1.4)."""
        sd, eps = self.sigma_data, self.eps
        c_skip = sd ** 2 / ((sigma - eps) ** 2 + sd ** 2)
        c_out = (sigma - eps) * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = self._labels(class_labels, x)
        dtype = self._dtype(x, force_fp32)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        F_x = self._run_model(c_in * x, c_noise, class_labels, dtype, model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)

# ----------------------------------------------------------------------------------------------------------------
# EDM pickle class names -> project classes (used by the checkpoint loader).

EDM_CLASS_MAP: dict[str, type] = {
    f"training.networks.{cls.__name__}": cls
    for cls in (Linear, Conv2d, GroupNorm, AttentionOp, UNetBlock, PositionalEmbedding, FourierEmbedding,
                SongUNet, DhariwalUNet, VPPrecond, VEPrecond, iDDPMPrecond, EDMPrecond)
}
# D2O's snapshots pickle its own training.networks module, which adds D2OPrecond under the same module name.
EDM_CLASS_MAP["training.networks.D2OPrecond"] = D2OPrecond
