"""FID of one training snapshot (FID-vs-training-images curves, Figs 1A and 3)."""
from pathlib import Path

from d2o import metrics
from d2o.edm.model_io import load_network
from d2o.generator import sample_experiment
from d2o.io import atomic_write_json
from d2o.sampling import quantize
from d2o.workflow import device, from_snakemake, metric_kwargs, read_json

log = from_snakemake(snakemake)
exp = read_json(snakemake.input.config)
kimg = int(snakemake.wildcards.kimg)
dev = device()
net = load_network(Path(snakemake.input.snapshots) / f"snapshot-{kimg:06d}.safetensors").to(dev)
n, batch = exp["eval"]["snapshot_num_samples"], exp["eval"]["batch"]
images = [quantize(sample_experiment(net, exp, list(range(s, min(s + batch, n))), dev), numpy=False) for s in range(0, n, batch)]
import torch  # noqa: E402

kw = metric_kwargs(snakemake.params.metrics, exp["offline"], "fid")
res = metrics.compute_fid(torch.cat(images).numpy(), snakemake.input.ref, n, device=dev, **kw)
res.update(experiment=exp["name"], kimg=kimg, mimg=kimg / 1000)
atomic_write_json(snakemake.output[0], res)
log.info("%s @ %d kimg: FID %.4f", exp["name"], kimg, res["value"])
