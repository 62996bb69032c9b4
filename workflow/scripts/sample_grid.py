"""A sample grid with the first `num` evaluation seeds (the same noise for EDM, D2O and D2O-F: Figs 5, 7-21)."""
import numpy as np

from d2o.edm.model_io import load_network
from d2o.figures import save_sample_grid
from d2o.generator import sample_experiment
from d2o.io import atomic_path
from d2o.sampling import quantize
from d2o.workflow import device, from_snakemake, read_json

log = from_snakemake(snakemake)
exp = read_json(snakemake.input.config)
dev = device()
net = load_network(snakemake.input.model).to(dev)
images = quantize(sample_experiment(net, exp, list(range(snakemake.params.num)), dev))
with atomic_path(snakemake.output[0], suffix=".npz") as tmp:
    np.savez(tmp, images=images, label=np.array(exp["label"]), experiment=np.array(exp["name"]))
save_sample_grid(images, 8, snakemake.output[1])
log.info("grid of %d samples for %s", len(images), exp["name"])
