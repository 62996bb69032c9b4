#!/usr/bin/env bash
# The offline demo: the paper's DAG end to end on config/demo.yaml (2 CPU cores, no internet, a few minutes).
# Usage: tools/demo.sh [workdir] [extra snakemake args]    (default workdir: the repository; outputs in results/demo)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/tools/env.sh"
WORKDIR=${1:-$REPO}; shift || true
snakemake --snakefile "$REPO/Snakefile" --directory "$WORKDIR" --configfile "$REPO/config/demo.yaml" \
  --cores "${CORES:-2}" --rerun-incomplete demo "$@"
echo "demo outputs: $WORKDIR/results/demo (tables/, figures/, scorecard.md)"
