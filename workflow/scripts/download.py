"""Download one file with resume, SHA-256 verification and the trust-on-first-download lock file."""
from d2o.download import download
from d2o.workflow import from_snakemake

from_snakemake(snakemake)
p = snakemake.params
download(p.url, snakemake.output[0], sha256=p.sha256 or None, lock_file=p.lock, key=p.key)
