"""Download one file: SHA-256 verified (registry or lock file), its content checked before a first hash is pinned,
atomic; a failure is one line in the rule log naming the file and the fix."""
import sys

from d2o.download import VALIDATORS, ChecksumError, DownloadError, LockFileError, download
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
p = snakemake.params
try:
    download(p.url, snakemake.output[0], sha256=p.sha256 or None, lock_file=p.lock, key=p.key,
             validate=VALIDATORS[p.content])
except (DownloadError, ChecksumError, LockFileError) as e:
    log.error("%s", e)
    sys.exit(1)
