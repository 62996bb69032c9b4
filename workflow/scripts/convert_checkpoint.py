"""Convert a checkpoint pickle into the project's safetensors format, without executing code from the pickle: an EDM
pickle's EMA generator (kind edm, its architecture checked against the registry's), or a StyleGAN2-ADA pickle's
discriminator (kind stylegan2ada-discriminator). The pickle is verified first (a copy put into place by hand like a
download)."""
from d2o.config import architecture_of
from d2o.stylegan2ada_checkpoint import STYLEGAN2ADA_KIND, convert_stylegan2ada_discriminator
from d2o.download import VALIDATORS, sha256_file, verify_file
from d2o.edm.model_io import convert_edm_pickle, read_header
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
src, dst, p = snakemake.input[0], snakemake.output[0], snakemake.params
verify_file(src, p.sha256 or None, p.lock, p.key, VALIDATORS["pickle"])
extra = {"source": src, "sha256": sha256_file(src)}
if p.kind == STYLEGAN2ADA_KIND:
    convert_stylegan2ada_discriminator(src, dst, extra=extra)
else:
    convert_edm_pickle(src, dst, key="ema", extra=extra)
    header = read_header(dst)
    arch = architecture_of(header["init_kwargs"], header["class"])
    if p.architecture and arch != p.architecture:
        raise ValueError(f"{src}: holds a {arch} network ({header['class']}), but the registry says "
                         f"checkpoints.{snakemake.wildcards.download_ckpt}.architecture: {p.architecture}; "
                         f"fix the registry entry or its url")
log.info("converted %s (%s) -> %s", src, p.kind, dst)
