"""The networks of EDM's released checkpoints (spec §1.1): each registry checkpoint's file and the constructor kwargs
EDM's train.py gave its preconditioner, in train.py's order (architecture preset, --cres, augment_dim 9 iff --augment,
dropout, use_fp16, then the dataset's resolution / channels / labels). For building the real architectures without
the files: benchmarks/bench_train.py, and the smoke run's EDM pickles with random weights (tests/smoke_fixtures.py).
The converter never reads these: a real pickle carries its own kwargs (d2o.edm.persistence).
"""

from __future__ import annotations

NCSNPP = dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual", decoder_type="standard",
              channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128, channel_mult=[2, 2, 2])
DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard", decoder_type="standard",
              channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2])
ADM = dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4])


def _net(arch: dict, res: int, label_dim: int, dropout: float, augment: bool, fp16: bool = False, cres=None) -> dict:
    return dict(arch, **({"channel_mult": cres} if cres else {}), **({"augment_dim": 9} if augment else {}),
                dropout=dropout, use_fp16=fp16, img_resolution=res, img_channels=3, label_dim=label_dim)


# registry checkpoint -> (upstream file name, EDMPrecond kwargs); EDM README's training commands
RELEASED = {
    "edm-cifar10-uncond": ("edm-cifar10-32x32-uncond-ve.pkl", _net(NCSNPP, 32, 0, 0.13, True)),
    "edm-cifar10-cond": ("edm-cifar10-32x32-cond-ve.pkl", _net(NCSNPP, 32, 10, 0.13, True)),
    "edm-afhqv2": ("edm-afhqv2-64x64-uncond-ve.pkl", _net(NCSNPP, 64, 0, 0.25, True, cres=[1, 2, 2, 2])),
    "edm-ffhq": ("edm-ffhq-64x64-uncond-ve.pkl", _net(NCSNPP, 64, 0, 0.05, True, cres=[1, 2, 2, 2])),
    "edm-imagenet": ("edm-imagenet-64x64-cond-adm.pkl", _net(ADM, 64, 1000, 0.10, False, fp16=True)),
    "edm-cifar10-uncond-vp": ("edm-cifar10-32x32-uncond-vp.pkl", _net(DDPMPP, 32, 0, 0.13, True)),
    "edm-cifar10-cond-vp": ("edm-cifar10-32x32-cond-vp.pkl", _net(DDPMPP, 32, 10, 0.13, True)),
    "edm-afhqv2-vp": ("edm-afhqv2-64x64-uncond-vp.pkl", _net(DDPMPP, 64, 0, 0.25, True, cres=[1, 2, 2, 2])),
    "edm-ffhq-vp": ("edm-ffhq-64x64-uncond-vp.pkl", _net(DDPMPP, 64, 0, 0.05, True, cres=[1, 2, 2, 2])),
}


def released_network(name: str) -> dict:
    """EDMPrecond kwargs of the released checkpoint `name` (a copy)."""
    if name not in RELEASED:
        raise KeyError(f"{name}: not one of EDM's released checkpoints ({', '.join(RELEASED)})")
    return dict(RELEASED[name][1])
