"""d2o.spectral_norm against torch.nn.utils.spectral_norm: same draws, names, values and gradients."""
import torch
import torch.nn as nn

from d2o.spectral_norm import SNConv2d, prepare_weights


def _pair(seed, *args, **kwargs):
    torch.manual_seed(seed)
    ref = nn.utils.spectral_norm(nn.Conv2d(*args, **kwargs))
    torch.manual_seed(seed)
    return ref, SNConv2d(*args, **kwargs)


def test_same_state_dict_as_torch_spectral_norm():
    ref, ours = _pair(0, 8, 4, 3, 2, 1)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b) == ["bias", "weight_orig", "weight_u", "weight_v"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ours.load_state_dict(a)


def test_forward_backward_and_power_iterations_bitwise():
    ref, ours = _pair(1, 6, 5, 4, 2, 1)
    for training in (True, True, False, True):
        ref.train(training), ours.train(training)
        x = torch.randn(3, 6, 8, 8)
        ya, yb = ref(x), ours(x)
        assert torch.equal(ya, yb)
        ga = torch.autograd.grad(ya.square().sum(), ref.weight_orig)[0]
        gb = torch.autograd.grad(yb.square().sum(), ours.weight_orig)[0]
        assert torch.equal(ga, gb)
        assert torch.equal(ref.weight_u, ours.weight_u) and torch.equal(ref.weight_v, ours.weight_v)
    assert not torch.equal(ours.weight_u, _pair(1, 6, 5, 4, 2, 1)[1].weight_u)     # the iterations moved u


def test_prepared_group_equals_layer_by_layer():
    torch.manual_seed(2)
    net = nn.Sequential(SNConv2d(3, 8, 3, 1, 1), nn.LeakyReLU(0.2), SNConv2d(8, 1, 4, 1, 0, bias=False)).train()
    torch.manual_seed(2)
    ref = nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(3, 8, 3, 1, 1)), nn.LeakyReLU(0.2),
                        nn.utils.spectral_norm(nn.Conv2d(8, 1, 4, 1, 0, bias=False))).train()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    for _ in range(2):
        prepare_weights(net)
        assert all(m._prepared is not None for m in net if isinstance(m, SNConv2d))
        out = net(x)
        assert all(m._prepared is None for m in net if isinstance(m, SNConv2d))      # used once
        assert torch.equal(out, ref(x))
    # R1-style double backward through the normalised weights
    (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    g.square().sum().backward()
    assert net[0].weight_orig.grad is not None and torch.isfinite(net[0].weight_orig.grad).all()
