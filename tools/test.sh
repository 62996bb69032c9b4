#!/usr/bin/env bash
# The test suite: unit tests, slow end-to-end tests (demo DAG in a temporary directory, resume after SIGKILL),
# snakemake --lint, and a dry run of every paper target with the SLURM profile.
# FAST=1 skips the slow tests.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/tools/env.sh"
cd "$REPO"
echo "==> snakemake --lint"
snakemake --lint
echo "==> dry run of every paper target with --profile slurm"
start=$(date +%s%N)
snakemake --profile slurm all -n --quiet rules > "${TMPDIR:-/tmp}/d2o-dryrun.txt"
echo "paper DAG dry run: $(( ($(date +%s%N) - start) / 1000000 )) ms"
tail -25 "${TMPDIR:-/tmp}/d2o-dryrun.txt"
echo "==> pytest (unit)"
python -m pytest -q
if [ "${FAST:-0}" != 1 ]; then
  echo "==> pytest (slow: end-to-end demo DAG, SIGKILL resume, ...)"
  python -m pytest -q -m slow
fi
