"""GAN losses on nested discriminator logits (spec §4; paper §3.2-3.3; docs/ARCHITECTURE.md).

Logits are a list over backbones of lists over heads of tensors (B, P_head). Per-logit terms:

| kind    | generator     | discriminator                              |
|---------|---------------|--------------------------------------------|
| "ns"    | softplus(-l)  | softplus(l_fake) + softplus(-l_real)       |
| "hinge" | -l            | relu(1 + l_fake) + relu(1 - l_real)        |

Aggregation of the per-logit terms:
- "sample_sum" (default; as D2O codes it, spec §4 "row quirk"): per backbone, each sample's terms over all its
  heads are concatenated and averaged (one mean per sample per backbone), then summed over samples and backbones.
  The loss therefore scales with the batch size (per-GPU batch in D2O) and weights heads by their logit count.
- "mean" (the paper's formula, P §3.3): per head, mean over samples and positions; summed over heads and backbones.
In the discriminator loss the fake and real parts are aggregated separately and added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("ns", "hinge")
AGGREGATIONS = ("sample_sum", "mean")


def _check(kind: str, aggregation: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"d2o.gan_loss: unknown loss kind {kind!r}; use one of {KINDS}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"d2o.gan_loss: unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")


def aggregate(terms: list[list[torch.Tensor]], aggregation: str = "sample_sum") -> torch.Tensor:
    """Reduce nested per-logit terms [[(B, P_h), ...], ...] to a scalar (see module docstring)."""
    if aggregation == "sample_sum":
        return sum(torch.cat([t.flatten(1) for t in heads], dim=1).mean(dim=1).sum() for heads in terms)
    if aggregation == "mean":
        return sum(t.mean() for heads in terms for t in heads)
    raise ValueError(f"d2o.gan_loss: unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")


def _map(fn, logits):
    return [[fn(l.float()) for l in heads] for heads in logits]


def generator_loss(logits_fake, kind: str = "ns", aggregation: str = "sample_sum") -> torch.Tensor:
    """L_G: "ns" softplus(-l), "hinge" -l, aggregated over the nested fake logits."""
    _check(kind, aggregation)
    fn = (lambda l: F.softplus(-l)) if kind == "ns" else (lambda l: -l)
    return aggregate(_map(fn, logits_fake), aggregation)


def discriminator_loss(logits_real, logits_fake, kind: str = "ns", aggregation: str = "sample_sum") -> torch.Tensor:
    """L_D: "ns" softplus(l_fake) + softplus(-l_real), "hinge" relu(1 + l_fake) + relu(1 - l_real)."""
    _check(kind, aggregation)
    if kind == "ns":
        fake, real = (lambda l: F.softplus(l)), (lambda l: F.softplus(-l))
    else:
        fake, real = (lambda l: F.relu(1 + l)), (lambda l: F.relu(1 - l))
    return aggregate(_map(fake, logits_fake), aggregation) + aggregate(_map(real, logits_real), aggregation)
