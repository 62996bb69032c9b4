"""Convert one verified external weight file (registry `weights`) into the project's format, without running code
from it: kind class-embedding -> a safetensors file with the (1000, 320) embedding (d2o.class_embedding)."""
from d2o.class_embedding import convert_class_embedding
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
if snakemake.params.kind != "class-embedding":
    raise ValueError(f"weights.{snakemake.wildcards.weight}: kind {snakemake.params.kind!r} has no converter")
meta = convert_class_embedding(snakemake.input[0], snakemake.output[0], extra={"weights": snakemake.wildcards.weight})
log.info("converted %s (%s, sha256 %s) -> %s", snakemake.input[0], meta["shape"], meta["source_sha256"], snakemake.output[0])
