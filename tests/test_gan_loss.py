"""GAN loss aggregation and kinds (spec §4; docs/ARCHITECTURE.md)."""

import pytest
import torch
import torch.nn.functional as F

from d2o.gan_loss import aggregate, discriminator_loss, generator_loss

# Two backbones: backbone 0 has heads with 2 and 1 positions, backbone 1 has one head with 3 positions; batch 2.
FAKE = [[torch.tensor([[1.0, -1.0], [0.5, 2.0]]), torch.tensor([[0.0], [3.0]])],
        [torch.tensor([[-2.0, 0.0, 1.0], [1.0, 1.0, -1.0]])]]
REAL = [[torch.tensor([[2.0, 0.0], [-0.5, 1.0]]), torch.tensor([[1.0], [-1.0]])],
        [torch.tensor([[0.0, 0.0, 2.0], [3.0, -2.0, 1.0]])]]


def sample_sum(fn, logits):
    """Per backbone: per sample mean over all that sample's logits (heads concatenated); sum samples, backbones."""
    total = 0.0
    for heads in logits:
        for b in range(2):
            vals = [fn(float(v)) for t in heads for v in t[b]]
            total += sum(vals) / len(vals)
    return total


def head_mean(fn, logits):
    return sum(sum(fn(float(v)) for v in t.flatten()) / t.numel() for heads in logits for t in heads)


def sp(v):
    return float(F.softplus(torch.tensor(v)))


@pytest.mark.parametrize("agg,ref", [("sample_sum", sample_sum), ("mean", head_mean)])
def test_ns_losses(agg, ref):
    g = generator_loss(FAKE, "ns", agg)
    d = discriminator_loss(REAL, FAKE, "ns", agg)
    assert float(g) == pytest.approx(ref(lambda v: sp(-v), FAKE), rel=1e-6)
    assert float(d) == pytest.approx(ref(sp, FAKE) + ref(lambda v: sp(-v), REAL), rel=1e-6)


@pytest.mark.parametrize("agg,ref", [("sample_sum", sample_sum), ("mean", head_mean)])
def test_hinge_losses(agg, ref):
    g = generator_loss(FAKE, "hinge", agg)
    d = discriminator_loss(REAL, FAKE, "hinge", agg)
    assert float(g) == pytest.approx(ref(lambda v: -v, FAKE), rel=1e-6)
    assert float(d) == pytest.approx(ref(lambda v: max(0.0, 1 + v), FAKE) + ref(lambda v: max(0.0, 1 - v), REAL),
                                     rel=1e-6)


def test_hand_computed_values():
    # Identity terms: sample_sum = backbone 0: mean(1,-1,0)=0 + mean(.5,2,3)=11/6; backbone 1: -1/3 + 1/3 = 0.
    assert float(aggregate(FAKE, "sample_sum")) == pytest.approx(11 / 6)
    # mean: head means 2.5/4, 3/2, 0/6 -> 0.625 + 1.5 + 0.
    assert float(aggregate(FAKE, "mean")) == pytest.approx(0.625 + 1.5)
    # The sample_sum loss grows with the batch; the mean loss does not.
    doubled = [[torch.cat([t, t]) for t in heads] for heads in FAKE]
    assert float(aggregate(doubled, "sample_sum")) == pytest.approx(2 * 11 / 6)
    assert float(aggregate(doubled, "mean")) == pytest.approx(0.625 + 1.5)


def test_gradients_and_errors():
    l = [[torch.zeros(2, 3, requires_grad=True)]]
    generator_loss(l, "ns", "sample_sum").backward()
    torch.testing.assert_close(l[0][0].grad, torch.full((2, 3), -0.5 / 3))  # d softplus(-l)/dl = -1/2, /3 per row
    with pytest.raises(ValueError, match="kind"):
        generator_loss(l, "wgan")
    with pytest.raises(ValueError, match="aggregation"):
        discriminator_loss(l, l, "ns", "sum")
