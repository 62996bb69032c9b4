"""Convert one external weight file (registry `weights`) into the safetensors file the jobs read (d2o.weights): the
file is verified first (a copy put into place by hand like a download), then read without running code from it."""
from d2o.download import VALIDATORS, verify_file
from d2o.weights import convert_weight
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
p, src, dst = snakemake.params, snakemake.input[0], snakemake.output[0]
verify_file(src, p.sha256 or None, p.lock, p.key, VALIDATORS[p.kind])
meta = convert_weight(snakemake.wildcards.weight, p.kind, src, dst)
log.info("converted %s (%s, sha256 %s) -> %s", src, p.kind, meta["source_sha256"], dst)
