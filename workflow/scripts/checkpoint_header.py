"""A checkpoint's network without its weights (a header-only project file, d2o.edm.model_io.save_header): from the
registry's pre-training spec, or from the converted checkpoint's header. Random-init runs read it."""
from d2o.edm.model_io import read_header, save_header
from d2o.pretrain import network_of
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
name, dst = snakemake.wildcards.ckpt, snakemake.output[0]
if snakemake.params.network is not None:
    class_name, kwargs = network_of(snakemake.params.network)
    source = f"checkpoints.{name}.pretrain.network"
else:
    header = read_header(snakemake.input[0])
    class_name, kwargs, source = header["class"], header["init_kwargs"], snakemake.input[0]
save_header(class_name, kwargs, dst, extra={"checkpoint": name, "source": source})
log.info("%s: %s header (no weights) from %s -> %s", name, class_name, source, dst)
