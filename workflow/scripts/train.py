"""Train one experiment (the `train` rule): `--gpus N` > 1 starts N processes under torchrun (one job, one node).
An experiment that asks for GPUs refuses to train on a machine without CUDA (D2O_ALLOW_CPU=1: the tests' CPU DDP).

Resumes from the run directory of the run's identity when it holds a state (d2o.run_state); exits with code 75
after saving its state when SLURM warns of a time limit (SIGUSR1) or on SIGTERM, so a resubmission continues.
"""
import argparse
import os
import sys
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--gpus", type=int, default=0, help="GPUs of the job (0 or 1: one process)")
ap.add_argument("--threads", type=int, default=None, help="CPU threads of the job (split over its processes)")
ap.add_argument("--training", required=True, help="training settings (rule settings, part training)")
ap.add_argument("--execution", required=True, help="execution settings (rule settings, part execution)")
ap.add_argument("--dataset", required=True)
ap.add_argument("--init", required=True, help="EDM checkpoint in the project format")
ap.add_argument("--d-init", default=None, help="converted pre-trained discriminator (discriminator.init)")
ap.add_argument("--weights", action="append", default=[],
                help="a converted registry weight the run reads (d2o.weights; the file is named after it); repeated")
ap.add_argument("--runs-dir", required=True, help="undeclared folder of the run directories (one per run identity)")
ap.add_argument("--output", required=True)
ap.add_argument("--snapshots", required=True)
ap.add_argument("--stop-after-iters", type=int, default=None, help="save state and stop (tests)")
args = ap.parse_args()

from d2o.io import check_writable  # noqa: E402 - before torch: fail at once on an unwritable output folder

check_writable([args.output, args.snapshots, Path(args.runs_dir) / "x"])
if args.threads:
    os.environ["OMP_NUM_THREADS"] = str(max(1, args.threads // max(args.gpus, 1)))
if args.gpus > 0 and not os.environ.get("D2O_ALLOW_CPU"):
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"train.py: the experiment asks for {args.gpus} GPU(s) (resources.gpus) and this machine has none; "
                 f"run it on a GPU node, or set resources.gpus: 0 in the registry to train on the CPU")
if args.gpus > 1 and "WORLD_SIZE" not in os.environ:  # one process per GPU, free rendezvous port (jobs may share a node)
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={args.gpus}", __file__, *sys.argv[1:]])

import torch  # noqa: E402

from d2o.settings import read_part  # noqa: E402
from d2o.training import Trainer  # noqa: E402
from d2o.workflow import setup_logging  # noqa: E402

setup_logging()
if args.threads:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
name, training = read_part(args.training, "training")
_, execution = read_part(args.execution, "execution")
trainer = Trainer(name, training, execution, args.runs_dir, args.dataset, args.init, d_init_path=args.d_init,
                  weights={Path(w).name.removesuffix(".safetensors"): w for w in args.weights})
code = trainer.run(args.output, stop_after_iters=args.stop_after_iters)
if code == 0 and trainer.rank == 0:
    trainer.run_dir.copy_snapshots(args.snapshots, training.snapshot_kimgs())
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
sys.exit(code)
