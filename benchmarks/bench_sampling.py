#!/usr/bin/env python3
"""Generation throughput: one-step D2O generation and EDM's Heun sampler, at the paper's architectures.

Random weights (speed does not depend on them). Prints images/s per sampler.
    python benchmarks/bench_sampling.py --arch cifar10 --batch 16            # CPU
    python benchmarks/bench_sampling.py --arch imagenet --batch 250          # one GPU
"""
import argparse
import json
import time

import torch

from d2o.edm import model_io
from d2o.sampling import edm_sample, one_step_sample

ARCHS = {
    "cifar10": dict(img_resolution=32, img_channels=3, label_dim=0, model_type="SongUNet", model_channels=128,
                    channel_mult=[2, 2, 2], channel_mult_noise=2, embedding_type="fourier", encoder_type="residual",
                    decoder_type="standard", resample_filter=[1, 3, 3, 1], attn_resolutions=[16], num_blocks=4, dropout=0.0),
    "ffhq": dict(img_resolution=64, img_channels=3, label_dim=0, model_type="SongUNet", model_channels=128,
                 channel_mult=[1, 2, 2, 2], channel_mult_noise=2, embedding_type="fourier", encoder_type="residual",
                 decoder_type="standard", resample_filter=[1, 3, 3, 1], attn_resolutions=[16], num_blocks=4, dropout=0.0),
    "imagenet": dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet", model_channels=192,
                     channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.0),
}


def rate(fn, n, repeats):
    fn()  # warm-up
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.time()
    for _ in range(repeats):
        fn()
    sync()
    return n * repeats / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=ARCHS, default="cifar10")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--heun-steps", type=int, default=18)
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = model_io.build("D2OPrecond", **ARCHS[args.arch]).to(dev).eval()
    seeds = list(range(args.batch))
    with torch.no_grad():
        one = rate(lambda: one_step_sample(net, seeds, device=dev), args.batch, args.repeats)
        heun = rate(lambda: edm_sample(net, seeds, num_steps=args.heun_steps, device=dev), args.batch, 1)
    print(json.dumps({"device": str(dev), "arch": args.arch, "batch": args.batch, "threads": torch.get_num_threads(),
                      "one_step_img_per_s": round(one, 2), f"heun{args.heun_steps}_img_per_s": round(heun, 3)}, indent=1))


if __name__ == "__main__":
    main()
