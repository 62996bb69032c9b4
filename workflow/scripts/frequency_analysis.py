"""Frequency analysis of EDM's sampling trajectory (Fig 4) and of its U-Net blocks (Fig 6), one npz.

Choices the paper leaves open (spec §9) come from the registry's `frequency` block: the checkpoint, the number of
images (seeds seed_start..), the Heun step count, the channel reduction, and the steps shown as Fig 4A rows; which
blocks and steps the figures show is d2o.frequency.figure_data's.
"""
import numpy as np

from d2o import frequency
from d2o.edm.model_io import load_network
from d2o.io import atomic_path
from d2o.sampling import edm_sample
from d2o.workflow import device, from_snakemake

log = from_snakemake(snakemake)
spec = snakemake.params.spec
dev = device()
net = load_network(snakemake.input.model).to(dev)
seeds = list(range(spec["seed_start"], spec["seed_start"] + spec["num_images"]))
recorder = frequency.TrajectoryRecorder()
with frequency.block_hooks(net) as blocks:
    edm_sample(net, seeds, num_steps=spec["num_steps"], record=recorder, device=dev)
out = frequency.figure_data(recorder.records, blocks.records, spec["num_steps"], spec["fig4_steps"],
                            spec["channel_reduce"], snakemake.params.label)
with atomic_path(snakemake.output[0], suffix=".npz") as tmp:
    np.savez(tmp, **out)
log.info("frequency analysis: %d images, %d steps, shallow %s, deep %s", len(seeds), spec["num_steps"],
         out["shallow_block"], out["deep_block"])
