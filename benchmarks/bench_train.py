#!/usr/bin/env python3
"""One D2O iteration at the CIFAR-10 paper configuration (G step + D step + amortised lazy R1): images/s and FLOP rate.

Builds the real CIFAR-10 NCSN++ generator (random weights) and the paper's discriminator (vgg16_bn +
tf_efficientnet_lite0, random weights: `offline`), a synthetic 32x32 dataset, and times Trainer.step().
FLOPs per image are counted with torch.utils.flop_counter on an iteration without R1 (the flop counter cannot
follow R1's double backward; R1 runs once per 16 iterations and costs about one extra D forward + double backward
on the real batch, a few percent of an iteration). Timed iterations start at iteration 1, so every 16th has R1.

    python benchmarks/bench_train.py --batch 8 --iters 3            # CPU, reduced batch
    python benchmarks/bench_train.py --batch 64 --iters 20          # one GPU: per-GPU batch of the paper's 4-GPU runs
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from d2o.config import load_config, resolve_experiment
from d2o.datasets import write_dataset_zip
from d2o.edm import model_io
from d2o.training import Trainer

CIFAR = dict(img_resolution=32, img_channels=3, label_dim=0, model_type="SongUNet", augment_dim=9, model_channels=128,
             channel_mult=[2, 2, 2], channel_mult_noise=2, embedding_type="fourier", encoder_type="residual",
             decoder_type="standard", resample_filter=[1, 3, 3, 1], attn_resolutions=[16], num_blocks=4, dropout=0.13)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--experiment", default="cifar10-uncond-d2o")
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    write_dataset_zip(tmp / "data.zip", rng.integers(0, 256, (max(256, args.batch * 4), 32, 32, 3), dtype=np.uint8))
    model_io.save_model(model_io.build("EDMPrecond", **CIFAR), tmp / "init.safetensors")
    exp = resolve_experiment(load_config("config/config.yaml"), args.experiment)
    exp.update(batch=args.batch, offline=True, precision=args.precision, state_minutes=1e9)
    tr = Trainer(exp, tmp / "run", tmp / "data.zip", tmp / "init.safetensors")
    sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
    with FlopCounterMode(display=False) as fc:
        tr.step()                   # iteration 0: G step + D step, no R1
    per_img = fc.get_total_flops() / args.batch
    sync()
    t0 = time.time()
    for _ in range(args.iters):
        tr.step()
    sync()
    dt = (time.time() - t0) / args.iters
    res = {"device": str(tr.device), "batch": args.batch, "precision": args.precision, "s_per_iter": dt,
           "img_per_s": args.batch / dt, "gflop_per_img_without_r1": per_img / 1e9, "achieved_tflops": per_img * args.batch / dt / 1e12}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
