"""The generator's bf16 path as the authors' --fp16=True runs it (D2OPrecond's explicit casts; spec §1.5), checked on
CPU by calling the U-Net in bfloat16 directly: the mapping network and the affine layers see float32, the
convolutions bfloat16, GroupNorm normalises in float32, and the preconditioning stays float32."""
import torch

from d2o.edm import model_io
from d2o.edm.networks import GroupNorm
from d2o.generator import build_generator

NET = dict(img_resolution=16, img_channels=3, label_dim=4, model_type="SongUNet", model_channels=16,
           channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], embedding_type="fourier", channel_mult_noise=2,
           encoder_type="residual", decoder_type="standard", resample_filter=[1, 3, 3, 1], dropout=0.0)


def test_bf16_generator_casts_as_the_authors():
    torch.manual_seed(0)
    G = build_generator(model_io.build("EDMPrecond", **NET), 4, use_fp16=True)
    assert G.use_fp16 and G._d2o_init[1]["use_fp16"] is True
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen.setdefault(name, (inputs[0].dtype, output.dtype))
        return record

    m = G.model
    handles = [m.map_layer0.register_forward_hook(hook("map_layer0")), m.map_label.register_forward_hook(hook("map_label")),
               m.enc["16x16_block0"].affine.register_forward_hook(hook("affine")),
               m.enc["16x16_block0"].conv0.register_forward_hook(hook("conv0")),
               m.enc["16x16_block0"].norm0.register_forward_hook(hook("norm0"))]
    x, c = torch.randn(2, 3, 16, 16), torch.eye(4)[[1, 3]]
    sigma = torch.full([2, 1, 1, 1], 80.0)
    c_skip, c_out, c_in, c_noise = G.coefficients(sigma)
    F = G._run_model(c_in * x, c_noise, c, torch.bfloat16, {})
    for h in handles:
        h.remove()
    assert F.dtype == torch.bfloat16
    assert seen["map_layer0"] == (torch.float32, torch.float32) and seen["map_label"][0] == torch.float32
    assert seen["affine"] == (torch.float32, torch.float32)          # cast to bf16 after the layer
    assert seen["conv0"] == (torch.bfloat16, torch.bfloat16) and seen["norm0"] == (torch.bfloat16, torch.bfloat16)
    ref = G._run_model(c_in * x, c_noise, c, torch.float32, {})       # bf16 is close to the fp32 network
    assert (F.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_groupnorm_normalises_bf16_in_float32():
    gn = GroupNorm(32)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(2, 32, 8, 8) * 3 + 1).bfloat16()
    expected = torch.nn.functional.group_norm(x.float(), gn.num_groups, gn.weight, gn.bias, gn.eps).bfloat16()
    assert torch.equal(gn(x), expected)
    x32 = x.float()
    assert torch.equal(gn(x32), torch.nn.functional.group_norm(x32, gn.num_groups, gn.weight, gn.bias, gn.eps))
