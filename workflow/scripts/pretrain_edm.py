"""Pre-train a tiny EDM with EDM's loss (offline demo stand-in for the official checkpoints)."""
from d2o.pretrain import pretrain_edm
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
summary = pretrain_edm(snakemake.params.spec, snakemake.input[0], snakemake.output[0], snakemake.params.label)
log.info("pre-trained: %s", summary)
