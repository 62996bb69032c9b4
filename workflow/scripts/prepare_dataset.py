"""Build one registry dataset into EDM's zip format (its source verified and counted against the registry)."""
from d2o.datasets import prepare_dataset
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
n = prepare_dataset(snakemake.params.spec, snakemake.output[0], snakemake.input[0] if len(snakemake.input) else None,
                    name=snakemake.params.name)
log.info("wrote %d images to %s", n, snakemake.output[0])
