"""Generate one shard of an experiment's evaluation set: seeds k*N/S .. (k+1)*N/S - 1, EDM-quantised."""
import numpy as np

from d2o.edm.model_io import load_network
from d2o.generator import sample_experiment
from d2o.io import atomic_path
from d2o.sampling import quantize
from d2o.workflow import device, from_snakemake, read_json

log = from_snakemake(snakemake)
exp = read_json(snakemake.input.config)
n, shards, k = exp["eval"]["num_samples"], exp["eval"]["shards"], int(snakemake.wildcards.shard)
seeds = list(range(k * n // shards, (k + 1) * n // shards))
dev = device()
net = load_network(snakemake.input.model).to(dev)
batch = exp["eval"]["batch"]
images, labels = [], []
for start in range(0, len(seeds), batch):
    images.append(quantize(sample_experiment(net, exp, seeds[start:start + batch], dev)))
    log.info("%s shard %d: %d/%d images", exp["name"], k, min(start + batch, len(seeds)), len(seeds))
with atomic_path(snakemake.output[0], suffix=".npz") as tmp:
    np.savez(tmp, images=np.concatenate(images), seeds=np.array(seeds, dtype=np.int64))
