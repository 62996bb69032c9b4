"""Frequency analysis of EDM's sampling trajectory (Fig 4) and of its U-Net blocks (Fig 6), one npz.

Choices the paper leaves open (spec §9) come from the registry's `frequency` block: the checkpoint, the number of
images (seeds seed_start..), the Heun step count, the channel reduction, and the steps shown as Fig 4A rows.
Block records are taken at the first network evaluation of each Heun step.
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
g = frequency.global_frequency_analysis(recorder.records, spec["channel_reduce"])
# U-Net call index of the first evaluation of each Heun step (2 calls per step, 1 for the last)
first_call = np.cumsum([0] + [2] * (spec["num_steps"] - 1))[: spec["num_steps"]]
step_records = [r for r in blocks.records if r["call"] in set(first_call.tolist())]
b = frequency.blockwise_frequency(step_records, spec["channel_reduce"])
dec = [n for n in b["blocks"] if n.startswith("dec.")]
by_res = sorted(dec, key=lambda n: b["blocks"][n]["resolution"])
deep, shallow = by_res[0], by_res[-1]
show = [s for s in spec["fig4_steps"] if s < spec["num_steps"]]
out = {"sigma": g["sigma"], "steps_shown": np.array(show), "radial_D_O": g["radial_D_O"], "radial_D_OI": g["radial_D_OI"],
       "shallow_block": np.array(shallow), "deep_block": np.array(deep),
       "radial_shallow": b["blocks"][shallow]["radial"], "radial_deep": b["blocks"][deep]["radial"],
       "label": np.array(snakemake.params.label)}
for key in ("I", "O", "OI_diff", "D_OI"):
    out[key] = g[key][show, 0]
for key in ("O_diff", "D_O"):
    out[key] = g[key][[max(s - 1, 0) for s in show], 0]
depths = sorted(dec, key=lambda n: (b["blocks"][n]["resolution"], n))
for i, name in enumerate(depths):
    out[f"fmap_in_{i}"] = b["blocks"][name]["mean_in"][-1]
    out[f"fmap_out_{i}"] = b["blocks"][name]["mean_out"][-1]
out["fmap_names"] = np.array(depths)
with atomic_path(snakemake.output[0], suffix=".npz") as tmp:
    np.savez(tmp, **out)
log.info("frequency analysis: %d images, %d steps, shallow %s, deep %s", len(seeds), spec["num_steps"], shallow, deep)
