import numpy as np
import torch

from d2o import pretrain
from d2o.datasets import make_shapes, write_dataset_zip
from d2o.edm import model_io

NETWORK = {"class": "EDMPrecond", "img_resolution": 16, "img_channels": 3, "label_dim": 0, "model_type": "SongUNet",
           "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
           "embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "residual", "decoder_type": "standard",
           "resample_filter": [1, 3, 3, 1], "dropout": 0.0}


def test_pretrain_uses_the_spec_loss_settings_and_writes_the_ema(tmp_path, monkeypatch):
    write_dataset_zip(tmp_path / "d.zip", make_shapes(64, 16, seed=0)[0])
    settings = []

    class Recording(pretrain.EDMLoss):
        def __call__(self, net, images, labels=None, augment_pipe=None):
            out = super().__call__(net, images, labels, augment_pipe)
            settings.append((self.P_mean, self.P_std))
            return out

    monkeypatch.setattr(pretrain, "EDMLoss", Recording)
    spec = {"network": NETWORK, "kimg": 0.048, "batch": 16, "lr": 0.002, "P_mean": -0.6, "P_std": 1.0, "seed": 3}
    summary = pretrain.pretrain_edm(spec, tmp_path / "d.zip", tmp_path / "m.safetensors", label="test")
    assert summary["kimg"] == 0.048 and np.isfinite(summary["final_loss"])
    assert settings == [(-0.6, 1.0)] * 3                               # 3 steps, each with the spec's sigma law
    net = model_io.load_model(tmp_path / "m.safetensors")
    assert net.img_resolution == 16 and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16), torch.full((2,), 1.0)).shape == (2, 3, 16, 16)
