#!/usr/bin/env bash
# The SLURM integration test: start a single-node SLURM (munge, slurmctld, slurmd, slurmdbd for sacct) from Debian
# packages, run tests/test_slurm.py against it, and stop every daemon by PID afterwards. Needs root and apt.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/tools/env.sh"
cd "$REPO"
WITH_DBD=1 bash tools/slurm-up.sh
trap 'bash tools/slurm-down.sh' EXIT
python -m pytest -q -m slurm tests/test_slurm.py -p no:cacheprovider
