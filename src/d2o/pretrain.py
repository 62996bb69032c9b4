"""Diffusion pre-training of a (tiny) EDM with EDM's loss: the offline demo's stand-in for the official checkpoints.

Same network classes as the paper's checkpoints (d2o.edm), EDM's loss (log-normal sigma, EDM's P_mean -1.2 and
P_std 1.2 unless the spec sets them, EDM weighting), Adam, EMA by half-life; no augmentation. Written in the
project's model format.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch

from d2o import ema as ema_lib
from d2o.datasets import read_dataset_zip
from d2o.edm import model_io
from d2o.edm.loss import EDMLoss

log = logging.getLogger("d2o.pretrain")


def network_of(network: dict) -> tuple[str, dict]:
    """The (class name, init kwargs) of a `checkpoints.<name>.pretrain.network` entry."""
    return network.get("class", "EDMPrecond"), {k: v for k, v in network.items() if k != "class"}


def pretrain_edm(spec: dict, dataset_zip: str | Path, output: str | Path, label: str = "") -> dict:
    """Pre-train per a registry `checkpoints.<name>.pretrain` spec; returns a summary dict."""
    torch.manual_seed(spec.get("seed", 0))
    images, _ = read_dataset_zip(dataset_zip)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    class_name, net_kwargs = network_of(spec["network"])
    net = model_io.build(class_name, **net_kwargs).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8)
    loss_fn = EDMLoss(**{k: spec[k] for k in ("P_mean", "P_std") if k in spec})   # EDM's defaults otherwise
    batch, total = spec["batch"], round(spec["kimg"] * 1000)
    nimg, t0, last_log, losses = 0, time.time(), 0, []
    while nimg < total:
        idx = torch.randint(len(data), (batch,))
        loss = loss_fn(net, data[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        nimg += batch
        ema_lib.update_ema(ema, net, ema_lib.ema_beta(batch, nimg, spec.get("ema_halflife_kimg", 10) * 1000, None))
        losses.append(loss.item())
        if nimg - last_log >= 10_000 or nimg >= total:
            rate = nimg / (time.time() - t0)
            log.info("pretrain kimg %.1f/%.1f  loss %.4f  %.0f img/s  ETA %.0f s", nimg / 1e3, total / 1e3,
                     sum(losses[-20:]) / len(losses[-20:]), rate, (total - nimg) / rate)
            last_log = nimg
    summary = {"kimg": nimg / 1e3, "final_loss": sum(losses[-20:]) / len(losses[-20:]), "seconds": time.time() - t0}
    model_io.save_model(ema, output, extra={"pretrained_by": "d2o.pretrain (EDM loss)", "label": label, **summary})
    return summary
