"""Freezing groups of the EDM U-Net (D2O-F, paper §4.2, Table 3, Fig 1C; spec §2).

Groups, by parameter name inside a SongUNet / DhariwalUNet (the `model.` prefix of a preconditioner is allowed):
- `conv`: the spatial convolutions of every U-Net block (`conv0`, `conv1`) and the attention output projection
  `proj`, plus the other spatial convolutions outside the blocks (the first conv `enc.<res>_conv`, NCSN++'s
  `aux_residual`/`aux_conv` convolutions, ADM's `out_conv`);
- `qkv`: the attention `qkv` projections;
- `skip`: the 1x1 shortcut convolutions `skip` of the blocks;
- `norm`: GroupNorms (`norm0/1/2`, `aux_norm`, `out_norm`) and the embedding-to-modulation `affine` linears;
- `other`: the mapping network (noise/class/augment embeddings and `map_layer*`).

This is the paper's labelling (Table 3: Norm 7.9 / Conv 85.8 / QKV 2.1 / Skip 4.0 %), which counts the
out-of-block convolutions as Conv: the accounting Table 3's header shows. What the paper's runs trained is the
released code's rule (spec §2: freeze names containing one of block/up/down/in AND the level's substrings): only the
in-block convolutions (84.40% on CIFAR-10, 83.84% at 64x64, 78.77% for ADM). `authors_rule=True` reproduces it
exactly and is the registry's default (`freeze_rule: authors`); `freeze_rule: groups` freezes the groups above.
"""

from __future__ import annotations

import re

import torch

GROUPS = ("norm", "conv", "qkv", "skip", "other")

_B = r"(?:^|[._])"  # a name component boundary: "enc.16x16_aux_conv.weight", "dec.8x8_in0.conv0.weight"
_RULES = [
    ("qkv", re.compile(_B + r"qkv\.")),
    ("skip", re.compile(_B + r"skip\.")),
    ("norm", re.compile(_B + r"(?:norm\d|aux_norm|out_norm|affine)\.")),
    ("conv", re.compile(_B + r"(?:conv0|conv1|proj|aux_conv|aux_residual|out_conv|conv)\.")),
    ("other", re.compile(r"^map_")),
]


def _strip(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def group_of(name: str) -> str:
    """The freezing group of one parameter name."""
    n = _strip(name)
    for group, pattern in _RULES:
        if pattern.search(n):
            return group
    return "other"


def parameter_groups(unet: torch.nn.Module) -> dict[str, list[str]]:
    """Group -> parameter names (as `unet.named_parameters()` spells them)."""
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, _ in unet.named_parameters():
        groups[group_of(name)].append(name)
    return groups


def authors_rule_frozen(name: str, groups) -> bool:
    """The released code's rule (spec §2): a name containing block/up/down/in and one of the level's substrings."""
    level = {"conv": ("conv", "proj"), "qkv": ("qkv",), "skip": ("skip",)}
    subs = [s for g in groups for s in level.get(g, ())]
    return any(k in name for k in ("block", "up", "down", "in")) and any(s in name for s in subs)


def freeze(unet: torch.nn.Module, groups, authors_rule: bool = False) -> list[str]:
    """Set requires_grad False on every parameter of the given groups; returns the frozen names."""
    groups = list(groups)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"freeze: unknown group(s) {sorted(unknown)}; valid choices: {', '.join(GROUPS)}")
    frozen = []
    for name, p in unet.named_parameters():
        hit = authors_rule_frozen(name, groups) if authors_rule else group_of(name) in groups
        if hit:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def group_shares(unet: torch.nn.Module) -> dict:
    """Percent of all parameters per group, and the trainable percent (written by every run)."""
    sizes = {g: 0 for g in GROUPS}
    total = trainable = 0
    for name, p in unet.named_parameters():
        sizes[group_of(name)] += p.numel()
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    shares = {g: 100.0 * s / total for g, s in sizes.items()}
    shares["trainable_percent"] = 100.0 * trainable / total
    shares["total_params"] = total
    shares["trainable_params"] = trainable
    return shares
