"""Convert a verified checkpoint pickle into the project's safetensors format, without executing code from the pickle:
an EDM pickle's EMA generator (kind edm), or a StyleGAN2-ADA pickle's discriminator (kind stylegan2ada-discriminator)."""
from d2o.discriminators import STYLEGAN2ADA_KIND, convert_stylegan2ada_discriminator
from d2o.download import sha256_file
from d2o.edm.model_io import convert_edm_pickle
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
src = snakemake.input[0]
extra = {"source": src, "sha256": sha256_file(src)}
if snakemake.params.kind == STYLEGAN2ADA_KIND:
    convert_stylegan2ada_discriminator(src, snakemake.output[0], extra=extra)
else:
    convert_edm_pickle(src, snakemake.output[0], key="ema", extra=extra)
log.info("converted %s (%s) -> %s", src, snakemake.params.kind, snakemake.output[0])
