"""Convert a verified EDM pickle into the project's safetensors format, without executing code from the pickle."""
from d2o.download import sha256_file
from d2o.edm.model_io import convert_edm_pickle
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
src = snakemake.input[0]
convert_edm_pickle(src, snakemake.output[0], key="ema", extra={"source": src, "sha256": sha256_file(src)})
log.info("converted %s -> %s", src, snakemake.output[0])
