"""Train one experiment (launched by the `train` rule, directly or under torchrun for several GPUs).

Resumes from <run-dir>/training-state.pt when it exists; exits with code 75 after saving its state when SLURM
warns of a time limit (SIGUSR1) or on SIGTERM, so a resubmission continues the run.
"""
import argparse
import json
import sys

import torch

from d2o.config import snapshot_kimgs
from d2o.training import Trainer, copy_snapshots
from d2o.workflow import setup_logging

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--config", required=True, help="resolved experiment JSON (rule experiment_config)")
ap.add_argument("--dataset", required=True)
ap.add_argument("--init", required=True, help="EDM checkpoint in the project format")
ap.add_argument("--d-init", default=None, help="converted pre-trained discriminator (discriminator.init)")
ap.add_argument("--run-dir", required=True, help="undeclared run directory holding the resumable state")
ap.add_argument("--output", required=True)
ap.add_argument("--snapshots", required=True)
ap.add_argument("--stop-after-iters", type=int, default=None, help="save state and stop (tests)")
args = ap.parse_args()

setup_logging()
with open(args.config) as f:
    exp = json.load(f)
trainer = Trainer(exp, args.run_dir, args.dataset, args.init, d_init_path=args.d_init)
kimgs = snapshot_kimgs(exp)
code = trainer.run(args.output, kimgs, stop_after_iters=args.stop_after_iters)
if code == 0 and trainer.rank == 0:
    copy_snapshots(args.run_dir, args.snapshots, kimgs)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
sys.exit(code)
