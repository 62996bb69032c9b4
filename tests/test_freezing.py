"""Freezing groups on the real CIFAR-10 NCSN++ architecture (meta device): Table 3's shares."""
import pytest
import torch

from d2o import freezing
from d2o.edm import EDMPrecond

CIFAR = dict(img_resolution=32, img_channels=3, label_dim=0, model_type="SongUNet", augment_dim=9, model_channels=128,
             channel_mult=[2, 2, 2], channel_mult_noise=2, embedding_type="fourier", encoder_type="residual",
             decoder_type="standard", resample_filter=[1, 3, 3, 1], attn_resolutions=[16], num_blocks=4, dropout=0.13)


@pytest.fixture(scope="module")
def cifar_unet():
    with torch.device("meta"):
        return EDMPrecond(**CIFAR).model


def test_table3_shares_within_0p6_points(cifar_unet):
    s = freezing.group_shares(cifar_unet)
    paper = {"norm": 7.9, "conv": 85.8, "qkv": 2.1, "skip": 4.0}
    for g, v in paper.items():
        assert abs(s[g] - v) <= 0.6, (g, s[g], v)
    assert abs(sum(s[g] for g in freezing.GROUPS) - 100) < 1e-9
    assert s["total_params"] == 56_397_827


def test_groups_of_known_names():
    g = freezing.group_of
    assert g("model.enc.32x32_block0.conv0.weight") == "conv"
    assert g("enc.16x16_block1.qkv.weight") == "qkv"
    assert g("dec.8x8_in0.skip.weight") == "skip"
    assert g("enc.32x32_block0.affine.weight") == "norm"
    assert g("dec.32x32_aux_norm.bias") == "norm"
    assert g("enc.16x16_aux_residual.weight") == "conv"
    assert g("enc.32x32_conv.weight") == "conv"
    assert g("out_conv.weight") == "conv" and g("out_norm.weight") == "norm"
    assert g("map_layer0.weight") == "other" and g("map_label.weight") == "other"


def test_freeze_d2o_f_trainable_share(cifar_unet):
    frozen = freezing.freeze(cifar_unet, ["conv"])
    s = freezing.group_shares(cifar_unet)
    assert abs((100 - s["trainable_percent"]) - 85.8) <= 0.6
    assert all(not p.requires_grad for n, p in cifar_unet.named_parameters() if n in set(frozen))
    for p in cifar_unet.parameters():
        p.requires_grad_(True)


def test_authors_rule_freezes_84p40_percent(cifar_unet):
    freezing.freeze(cifar_unet, ["conv"], authors_rule=True)
    s = freezing.group_shares(cifar_unet)
    assert abs((100 - s["trainable_percent"]) - 84.40) < 0.01      # spec §2: 47.60M / 56.40M
    for p in cifar_unet.parameters():
        p.requires_grad_(True)


def test_unknown_group():
    with pytest.raises(ValueError, match="valid choices"):
        freezing.freeze(torch.nn.Linear(2, 2), ["convs"])


NCSNPP64 = dict(CIFAR, img_resolution=64, channel_mult=[1, 2, 2, 2], augment_dim=9)
ADM = dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet", model_channels=192,
           channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.1)


@pytest.mark.parametrize("experiment, net, frozen_percent", [
    ("cifar10-uncond-d2o-f", CIFAR, 84.40), ("afhqv2-d2o-f", NCSNPP64, 83.84), ("imagenet64-d2o-f", ADM, 78.77)])
def test_paper_d2o_f_runs_freeze_what_the_released_code_froze(experiment, net, frozen_percent):
    """The paper registry's D2O-F settings freeze the released code's set (spec §2), not the Table 3 accounting."""
    from d2o.config import experiment_settings, load_config

    t = experiment_settings(load_config("config/config.yaml"), experiment).training
    assert t.freeze == ("conv",) and t.freeze_rule == "authors"
    with torch.device("meta"):
        unet = EDMPrecond(**net).model
    freezing.freeze(unet, t.freeze, authors_rule=t.freeze_rule == "authors")
    assert abs((100 - freezing.group_shares(unet)["trainable_percent"]) - frozen_percent) < 0.01
