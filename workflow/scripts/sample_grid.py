"""A sample grid with the first `num` evaluation seeds (the same noise for EDM, D2O and D2O-F: Figs 5, 7-21)."""
import numpy as np

from d2o.edm.model_io import load_network
from d2o.figures import save_sample_grid
from d2o.io import atomic_path
from d2o.sampling import quantize, sample_experiment
from d2o.settings import read_part
from d2o.workflow import device, from_snakemake

log = from_snakemake(snakemake)
name, sampling = read_part(snakemake.input.sampling, "sampling")
dev = device()
net = load_network(snakemake.input.model).to(dev)
images = quantize(sample_experiment(net, sampling, list(range(snakemake.params.num)), dev))
with atomic_path(snakemake.output[0], suffix=".npz") as tmp:
    np.savez(tmp, images=images, label=np.array(snakemake.params.label), experiment=np.array(name))
save_sample_grid(images, 8, snakemake.output[1])
log.info("grid of %d samples for %s", len(images), name)
