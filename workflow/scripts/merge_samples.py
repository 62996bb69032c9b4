"""Merge the shards of one experiment into an EDM-format zip of PNGs (seed order), with the samples' identity."""
import numpy as np

from d2o.datasets import write_dataset_zip
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
shards = [np.load(p) for p in snakemake.input]
ids = {(str(z["model_identity"]), str(z["samples_identity"])) for z in shards}
if len(ids) != 1:
    raise ValueError(f"{snakemake.output[0]}: its shards come from different models or sampling settings ({sorted(ids)}); "
                     f"delete {snakemake.input[0].rsplit('/', 1)[0]} and rerun")
model_id, samples_id = ids.pop()
images = np.concatenate([z["images"] for z in shards])
write_dataset_zip(snakemake.output[0], images, total=len(images),
                  extra={"model_identity": model_id, "samples_identity": samples_id})
log.info("%d images (samples %s of model %s) -> %s", len(images), samples_id, model_id, snakemake.output[0])
