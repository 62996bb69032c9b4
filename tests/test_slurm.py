"""The DAG on a real SLURM controller (tools/test-slurm.sh starts a single-node cluster first).

A CPU subset of the demo (tests/slurm/registry.yaml) runs through `--profile slurm`: every job goes through
sbatch (checked in sacct), the training job's first attempt reaches its 1-minute time limit, saves its state and
exits; Snakemake resubmits it (retries) with a longer runtime and the run resumes, ending bitwise-identical to an
uninterrupted local run.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(
    shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0,
    reason="no SLURM controller (run tools/test-slurm.sh)")]


def _digest(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_demo_subset_through_sbatch_with_time_limit_resume(tmp_path):
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    target = "results/slurm-test/slurm-d2o/model.safetensors"
    cmd = [str(bindir / "snakemake"), target, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(REPO / "tests/slurm/registry.yaml"),
           "--profile", str(REPO / "slurm"), "--profile", str(REPO / "tests/slurm/profile"),
           "--slurm-jobname-prefix", "d2otest"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]

    # every non-local rule went through sbatch: the plugin's per-job logs name the SLURM job ids, sacct knows them
    ids = {rule.name[len("rule_"):]: sorted(int(p.stem) for p in rule.rglob("*.log"))
           for rule in (tmp_path / "logs/slurm").iterdir()}
    assert set(ids) == {"pretrain_edm", "train"}, ids           # downloads/datasets/configs are local rules
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(map(str, ids["pretrain_edm"] + ids["train"])),
                           "-o", "JobID,State,Timelimit,Comment"], capture_output=True, text=True).stdout
    rows = {int(r.split("|")[0]): r.split("|") for r in acct.splitlines()}
    assert all(rows[i][3].startswith("rule_train") for i in ids["train"]), acct
    states = [rows[i][1] for i in ids["train"]]
    assert len(states) >= 2 and states[-1] == "COMPLETED", acct   # first attempt + resubmission
    assert all(s in ("FAILED", "TIMEOUT") for s in states[:-1]), acct
    assert rows[ids["train"][0]][2] == "00:01:00" and rows[ids["train"][1]][2] == "00:02:00", acct  # runtime grows

    (run,) = [p for p in (tmp_path / "results/slurm-test/slurm-d2o/runs").iterdir()
              if not p.name.startswith(".")]  # the run directory of its identity (not the .trainer.lock beside it)
    stats = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    train_log = (tmp_path / "logs/slurm-test/train/slurm-d2o.log").read_text()
    assert "resumed" in train_log, train_log[-3000:]

    # the resumed run equals an uninterrupted local run of the same job
    ref = tmp_path / "ref"
    settings = tmp_path / "results/slurm-test/slurm-d2o/settings"
    subprocess.run([sys.executable, str(REPO / "workflow/scripts/train.py"), "--training", str(settings / "training.json"),
                    "--execution", str(settings / "execution.json"),
                    "--dataset", str(tmp_path / "resources/slurm-test/datasets/shapes16.zip"),
                    "--init", str(tmp_path / "results/slurm-test/checkpoints/tiny-edm.safetensors"),
                    "--runs-dir", str(ref), "--output", str(ref / "model.safetensors"), "--snapshots", str(ref / "snaps")],
                   check=True, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert _digest(ref / "model.safetensors") == _digest(tmp_path / target)
    assert stats[-1]["kimg"] == pytest.approx(3.2)
