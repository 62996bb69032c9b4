#!/usr/bin/env python3
"""One D2O iteration of a paper experiment (G step + D step + amortised lazy R1): images/s and FLOP rate.

`--experiment` picks the iteration: cifar10-uncond-d2o (the default: NCSN++ 32, VGG16-BN + EfficientNet-Lite0),
afhqv2-d2o (NCSN++ 64, DeiT-B + EfficientNet-Lite0), imagenet64-d2o-f (ADM 64 with 1000 classes, conditional heads,
D2O-F). Builds the experiment's generator (its EDM checkpoint's released architecture, d2o.edm.released; random
weights) and discriminator (random weights: `offline`), a synthetic dataset of its resolution and classes, and times
Trainer.step() for each variant (D precision). FLOPs per image are counted with torch.utils.flop_counter on
iteration 0 (no R1: the counter cannot follow R1's double backward), run eagerly, and so are the computing ATen
operators (a proxy for kernel launches; optimiser steps and EMA excluded, as they are fused on CUDA). Iterations 1..16 warm up (cuDNN autotuning,
the first R1 at iteration 16); the timed window is iterations 17..16+N, so with N a multiple of 16 it
holds exactly N/16 R1 steps, the paper's amortisation.

    python benchmarks/bench_train.py --batch 4 --iters 2 --warmup 1                  # CPU, reduced batch
    python benchmarks/bench_train.py --experiment imagenet64-d2o-f --batch 2 --iters 1 --warmup 0
    python benchmarks/bench_train.py --batch 64 --variants fp32,tf32,bf16             # one GPU (per-GPU batch of the
                                                                                      # paper's 4-GPU CIFAR-10 runs)
A variant is a D precision: fp32 (the authors': G bf16, D fp32, TF32 off), tf32, bf16, optionally with a torch.compile
mode of the experiment key `compile` after a colon: bf16:default, bf16:reduce-overhead (CUDA graphs), fp32:max-autotune.
Warm-up then includes the compilation. A trailing @nchw keeps the generator in NCHW on CUDA (bf16@nchw): the Trainer
makes every network channels_last there, but CUDA's group_norm copies channels_last inputs to NCHW (and autocast runs
it in fp32), so each of NCSN++'s GroupNorms costs layout copies both ways; this variant measures the alternative.
"""
import argparse
import contextlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from d2o.config import load_config, resolve_experiment
from d2o.settings import Experiment
from d2o.datasets import write_dataset_zip
from d2o.edm import model_io
from d2o.edm.released import released_network
from d2o.training import Trainer


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators that compute (views excluded): a device-independent proxy for kernel launches,
    which bound the eager bf16 iteration on an H100. `paused()` excludes a region."""

    def __init__(self):
        super().__init__()
        self.ops, self._on = Counter(), True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self._on and not any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def paused(self):
        self._on = False
        try:
            yield
        finally:
            self._on = True


@contextlib.contextmanager
def counting_ops(tr: Trainer):
    """OpCounter over a block, with the optimiser steps and the EMA update paused: on CUDA those are fused
    multi-tensor kernels (fused Adam, _foreach_lerp_), on CPU one op per tensor."""
    import d2o.training

    counter = OpCounter()

    def paused(f):
        def run(*args, **kwargs):
            with counter.paused():
                return f(*args, **kwargs)
        return run

    parts = {"generator": tr.G}  # forward operators by part, into counter.forward_by_part
    if hasattr(getattr(tr, "D", None), "projections"):
        parts.update({f"projection {n}": m for n, m in tr.D.projections.items()})
        parts.update({f"heads {n}": m for n, m in tr.D.discriminators.items()})
    counter.forward_by_part = dict.fromkeys(parts, 0)

    def hook(name, sign):  # minus the running count before the part's forward, plus it after
        def add(*_):
            counter.forward_by_part[name] += sign * sum(counter.ops.values())
        return add

    opts = [o for o in (tr.opt_G, getattr(tr, "opt_D", None)) if o is not None]
    update_ema = d2o.training.ema_lib.update_ema
    handles = [h for name, m in parts.items()
               for h in (m.register_forward_pre_hook(hook(name, -1)), m.register_forward_hook(hook(name, +1)))]
    try:
        for o in opts:
            o.step = paused(o.step)      # instance attribute over the class method
        d2o.training.ema_lib.update_ema = paused(update_ema)
        with counter:
            yield counter
    finally:
        for o in opts:
            del o.step
        d2o.training.ema_lib.update_ema = update_ema
        for h in handles:
            h.remove()


def bench(variant: str, args, tmp: Path) -> dict:
    variant_, _, g_format = variant.partition("@")
    d_precision, _, compile_mode = variant_.partition(":")
    if g_format not in ("", "nchw"):
        raise SystemExit(f"variant {variant!r}: the only generator format suffix is @nchw")
    r = resolve_experiment(load_config("config/config.yaml"), args.experiment)
    r.update(batch=args.batch, batch_gpu=args.batch_gpu, round_batch=args.round_batch, offline=True, precision=args.precision, d_precision=d_precision,
             compile=compile_mode or "off", state_minutes=1e9, resources=dict(r["resources"], gpus=1),
             dataset_images=None)  # a synthetic dataset of a few images
    if args.projections:
        r["discriminator"] = dict(r["discriminator"], projections=args.projections)
    exp = Experiment.from_resolved(r)
    tr = Trainer(exp.name, exp.training, exp.execution, tmp / f"run-{variant}", tmp / "data.zip", tmp / "init.safetensors")
    cuda = tr.device.type == "cuda"
    if g_format == "nchw":  # before the first step: fused Adam's state is created then, in the parameters' format
        tr.G.to(memory_format=torch.contiguous_format)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    G_fast, tr.G_fast = tr.G_fast, tr.G  # iteration 0 (G step + D step, no R1) eager: the counters cannot see compiled code
    with tr._eager_D(), FlopCounterMode(display=False) as fc, counting_ops(tr) as ops:
        tr.step()
    tr.G_fast = G_fast
    per_img = fc.get_total_flops() / args.batch
    t0 = time.time()
    for _ in range(args.warmup):
        tr.step()
    sync()
    warm_s = time.time() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(args.iters):
        stats = tr.step()
    sync()
    dt = (time.time() - t0) / args.iters
    res = {"variant": variant, "device": torch.cuda.get_device_name() if cuda else "cpu", "batch": args.batch,
           "batch_gpu": tr.batch_gpu, "rounds": tr.rounds, "virtual_gpus_per_round": tr.group, "g_precision": args.precision, "s_per_iter": round(dt, 5), "img_per_s": round(args.batch / dt, 2),
           "gflop_per_img_without_r1": round(per_img / 1e9, 1),
           "eager_ops_per_iter_without_r1": sum(ops.ops.values()), "eager_forward_ops_by_part": ops.forward_by_part, "achieved_tflops": round(per_img * args.batch / dt / 1e12, 2),
           "compile": exp.execution.compile, "projections": exp.training.discriminator.projections, "g_memory_format": g_format or ("channels_last" if cuda else "nchw"), "warmup_s": round(warm_s, 1), "loss_G": float(stats["loss_G"]), "loss_D": float(stats["loss_D"])}
    if cuda:
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            for _ in range(2):
                tr.step()
            sync()
        key = "cuda_time_total" if cuda else "cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=40)
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        (Path(args.profile) / f"profile-{variant.replace(':', '-').replace('@', '-')}.txt").write_text(table)
    del tr
    if cuda:
        torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batch-gpu", type=int, default=None, help="virtual GPU size (default: the whole batch)")
    ap.add_argument("--round-batch", type=int, default=None, help="samples per pass, a multiple of --batch-gpu "
                    "(default: --batch-gpu, one virtual GPU per accumulation round)")
    ap.add_argument("--iters", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--experiment", default="cifar10-uncond-d2o")
    ap.add_argument("--precision", default="bf16", help="generator precision (bf16, bf16-autocast, fp32)")
    ap.add_argument("--projections", default=None, help="projected D: per_gpu or shared (default: the experiment's)")
    ap.add_argument("--variants", default="fp32", help="comma-separated D precisions (fp32, tf32, bf16), each optionally :<compile mode> and @nchw")
    ap.add_argument("--profile", default=None, help="folder for a torch.profiler table per variant")
    ap.add_argument("--json", default=None, help="append one JSON line per variant here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    r = resolve_experiment(load_config("config/config.yaml"), args.experiment)
    net = released_network(r["init"])  # the experiment's generator: its EDM checkpoint's architecture, random weights
    n, res, label_dim = max(256, args.batch * 4), net["img_resolution"], net["label_dim"]
    write_dataset_zip(tmp / "data.zip", rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8),
                      rng.integers(0, label_dim, n) if label_dim else None)
    model_io.save_model(model_io.build("EDMPrecond", **net), tmp / "init.safetensors")
    for variant in args.variants.split(","):
        res = bench(variant, args, tmp)
        print(json.dumps(res), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
