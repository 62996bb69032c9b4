"""Collect the snapshot FIDs of one run into a curve [(Mimg, FID), ...]."""
from d2o.io import atomic_write_json
from d2o.workflow import from_snakemake, read_json

from_snakemake(snakemake)
points = sorted((r["mimg"], r["value"]) for r in map(read_json, snakemake.input))
atomic_write_json(snakemake.output[0], {"experiment": snakemake.wildcards.experiment, "points": points,
                                        "label": read_json(snakemake.input[0])["label"]})
