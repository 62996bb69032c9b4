"""FID of one training snapshot (FID-vs-training-images curves, Figs 1A and 3)."""
from pathlib import Path

import torch

from d2o import metrics
from d2o.edm.model_io import load_network
from d2o.io import atomic_write_json
from d2o.sampling import quantize, sample_experiment
from d2o.settings import read_part
from d2o.workflow import device, from_snakemake, job_weights, metric_kwargs, result_record

log = from_snakemake(snakemake)
name, sampling = read_part(snakemake.input.sampling, "sampling")
_, ev = read_part(snakemake.input.evaluation, "evaluation")
kimg = int(snakemake.wildcards.kimg)
dev = device()
path = Path(snakemake.input.snapshots) / f"snapshot-{kimg:06d}.safetensors"
net = load_network(path).to(dev)
n, batch = ev.snapshot_num_samples, sampling.batch
images = [quantize(sample_experiment(net, sampling, list(range(s, min(s + batch, n))), dev), numpy=False)
          for s in range(0, n, batch)]
res = metrics.compute_fid(torch.cat(images).numpy(), snakemake.input.ref, n, device=dev, **metric_kwargs(ev.features, "fid", job_weights(snakemake), ev.label))
res = result_record(res, name, None, dev, job_weights(snakemake))
res.update(kimg=kimg, mimg=kimg / 1000, run_identity=net.d2o_extra.get("run_identity"))
atomic_write_json(snakemake.output[0], res)
log.info("%s @ %d kimg: FID %.4f", name, kimg, res["value"])
