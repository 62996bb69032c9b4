"""What reruns when an experiment is edited, at the DAG level (the demo registry in a temporary directory; slow):
a changed training setting retrains from scratch into its own run directory (the model equals a fresh run in an
empty directory, bitwise on CPU); a description or resources edit plans nothing; an evaluation edit reruns sampling
and metrics only; an edit of what makes a run's input files (a checkpoint's pre-training, the dataset) retrains it;
--forcerun train retrains from scratch."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = "results/demo/demo-d2o/model.safetensors"
SCRATCH = "results/demo/demo-scratch/model.safetensors"   # init_weights: random


def _registry(**d2o_keys):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["checkpoints"]["tiny-edm"]["pretrain"]["kimg"] = 2          # a quick tiny EDM: only the reruns are tested
    cfg["experiments"]["demo-d2o"].update({"duration_mimg": 0.00064, **d2o_keys})   # 20 iterations of 32
    return cfg


def _snakemake(work, cfg, *args):
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"), "--directory",
           str(work), "--configfile", str(work / "config.yaml"), "--cores", "2", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout + out.stderr


def _planned(work, cfg, target=MODEL):
    """The rules a dry run of `target` would run (empty: nothing to be done)."""
    text = _snakemake(work, cfg, target, "-n", "--quiet", "rules")
    if "Nothing to be done" in text:
        return set()
    rows = [line.split() for line in text.splitlines()]
    return {r[0] for r in rows if len(r) == 2 and r[1].isdigit() and r[0] not in ("total", "job")}


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
def test_what_reruns_after_an_edit(tmp_path):
    work = tmp_path / "work"
    cfg = _registry()
    _snakemake(work, cfg, MODEL, SCRATCH)
    first = _digest(work / MODEL)
    assert _planned(work, cfg) == set()

    # what makes an input file (the files are read as they are): the tiny EDM's pre-training retrains its fine-tunings,
    # not the random-init run (its network header only); the dataset both
    longer = _registry()
    longer["checkpoints"]["tiny-edm"]["pretrain"]["kimg"] = 3
    assert _planned(work, longer) == {"pretrain_edm", "settings", "train"} and _planned(work, longer, SCRATCH) == set()
    other = _registry()
    other["datasets"]["shapes16"]["source"]["contrast"] = 0.5
    assert {"prepare_dataset", "settings", "train"} <= _planned(work, other, SCRATCH)
    assert _planned(work, _registry(), SCRATCH) == set()

    # text and resources: nothing reruns
    assert _planned(work, _registry(description="another text")) == set()
    assert _planned(work, _registry(resources={"gpus": 0, "hours": 5, "threads": 1})) == set()
    # evaluation: sampling and metrics, never training
    plan = _planned(work, _registry(eval={"num_samples": 512}), "results/demo/demo-d2o/metrics/fid.json")
    assert "train" not in plan and {"sample_shard", "metric"} <= plan

    # a training setting: retrained from scratch into its own run directory, the old one kept
    new = _registry(lr_g=1e-4)
    assert _planned(work, new) == {"settings", "train"}
    log = _snakemake(work, new, MODEL)
    runs = sorted(p.name for p in (work / "results/demo/demo-d2o/runs").iterdir() if not p.name.startswith("."))  # .trainer.lock
    assert len(runs) == 2
    train_log = (work / "logs/demo/train/demo-d2o.log").read_text()
    assert "lr_g: 0.0002 -> 0.0001" in train_log and "not resumed, kept" in train_log
    assert "started at iteration 0" in train_log.rsplit("run ", 1)[-1]
    fresh = tmp_path / "fresh"  # the same registry in an empty directory (the dataset and tiny EDM copied: same content)
    for f in ("resources/demo/datasets/shapes16.zip", "results/demo/checkpoints/tiny-edm.safetensors"):
        (fresh / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / f, fresh / f)
    _snakemake(fresh, new, MODEL)
    cnn = "resources/demo/weights/demo-cnn.safetensors"  # the discriminator's backbone, trained again in fresh/
    assert _digest(work / cnn) == _digest(fresh / cnn), "the demo CNN's training is not reproducible"
    assert _digest(work / MODEL) == _digest(fresh / MODEL) != first

    # back to the first settings: its finished run is not resumed into new outputs unless asked; --forcerun retrains
    _snakemake(work, new, MODEL, "--forcerun", "train")
    assert any(".previous-" in p.name for p in (work / "results/demo/demo-d2o/runs").iterdir())
    assert "training from scratch" in (work / "logs/demo/train/demo-d2o.log").read_text()
    assert _digest(work / MODEL) == _digest(fresh / MODEL)
