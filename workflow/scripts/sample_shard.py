"""Generate one shard of an experiment's evaluation set: seeds k*N/S .. (k+1)*N/S - 1, EDM-quantised."""
import numpy as np

from d2o.edm.model_io import load_network
from d2o.identity import model_identity, samples_identity
from d2o.io import atomic_path
from d2o.sampling import quantize, sample_experiment
from d2o.settings import read_part
from d2o.workflow import device, from_snakemake

log = from_snakemake(snakemake)
name, sampling = read_part(snakemake.input.sampling, "sampling")
n, shards, k = sampling.num_samples, sampling.shards, int(snakemake.wildcards.shard)
seeds = list(range(k * n // shards, (k + 1) * n // shards))
dev = device()
net = load_network(snakemake.input.model).to(dev)
model_id = model_identity(snakemake.input.model)
images = []
for start in range(0, len(seeds), sampling.batch):
    images.append(quantize(sample_experiment(net, sampling, seeds[start:start + sampling.batch], dev)))
    log.info("%s shard %d: %d/%d images", name, k, min(start + sampling.batch, len(seeds)), len(seeds))
with atomic_path(snakemake.output[0], suffix=".npz") as tmp:
    np.savez(tmp, images=np.concatenate(images), seeds=np.array(seeds, dtype=np.int64),
             model_identity=np.array(model_id), samples_identity=np.array(samples_identity(model_id, sampling)))
