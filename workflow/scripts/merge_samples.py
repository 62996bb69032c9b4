"""Merge the shards of one experiment into an EDM-format zip of PNGs (seed order)."""
import numpy as np

from d2o.datasets import write_dataset_zip
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
images = np.concatenate([np.load(p)["images"] for p in snakemake.input])
write_dataset_zip(snakemake.output[0], images, total=len(images))
log.info("%d images -> %s", len(images), snakemake.output[0])
