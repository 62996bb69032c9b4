"""Processes of a training job: torchrun ranks, the gradient all-reduce, seeded random streams, SLURM's end time.

A multi-GPU run is launched by `torchrun --standalone --nproc_per_node=<gpus>` inside one job (workflow/scripts/
train.py relaunches itself that way); every rank reads WORLD_SIZE / RANK / LOCAL_RANK from the environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import numpy as np
import torch
import torch.distributed as dist

from d2o.r1 import sanitize_grads


def init() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group when there are several ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def reduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """The gradients of `params` as every optimiser step takes them: all-reduce mean over ranks, then sanitised
    (NaN -> 0, +-inf -> +-1e5, as the authors), on one flat buffer (d2o.r1.sanitize_grads)."""
    def reduce(flat: torch.Tensor) -> None:
        dist.all_reduce(flat)
        flat /= world
    sanitize_grads(params, reduce=reduce if world > 1 else None)


def seeded(seed: int, *keys: int, device="cpu") -> torch.Generator:
    """A torch.Generator seeded by (seed, *keys) through numpy's SeedSequence: independent streams per key tuple."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] % (2**63)))
    return g


def slurm_end_time() -> float | None:
    """UNIX time at which SLURM will stop this job (SLURM_JOB_END_TIME, else squeue), or None outside SLURM."""
    if os.environ.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(os.environ["SLURM_JOB_END_TIME"])
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    with contextlib.suppress(Exception):
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=30).stdout.strip()
        return time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S"))
    return None
