import copy

import pytest
import torch

from d2o.ema import ema_beta, update_ema


def test_beta_with_rampup():
    # spec §5: at 5 Mimg with batch 256 and ramp-up 0.05: h = 250k images, beta = 0.5 ** (256 / 250000)
    assert ema_beta(256, 5_000_000, 0.5e6, 0.05) == pytest.approx(0.99929, abs=1e-5)
    assert ema_beta(256, 0, 0.5e6, 0.05) == pytest.approx(0.0)            # first step copies the net
    assert ema_beta(256, 20_000_000, 0.5e6, 0.05) == pytest.approx(0.5 ** (256 / 0.5e6))  # half-life caps h
    assert ema_beta(256, 0, 0.5e6, None) == pytest.approx(0.5 ** (256 / 0.5e6))


def test_update():
    net = torch.nn.Linear(3, 3)
    ema = copy.deepcopy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, net, 0.75)
    for b, p_ema, p in zip(before, ema.parameters(), net.parameters()):
        assert torch.allclose(p_ema, 0.75 * b + 0.25 * p)
