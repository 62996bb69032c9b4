"""Targets that name nothing of the registry get one line with the valid names; `demo` exists with the demo registry
only (with the paper registry it would plan the whole paper)."""
import subprocess
import sys
from pathlib import Path

import pytest

from d2o.config import load_config, target_error

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target, expected", [
    ("results/tables/table44.tex", "unknown table 'table44' (did you mean table4"),
    ("results/figures/fig9.pdf", "unknown figure 'fig9'"),
    ("results/cifar10-uncond-d2oo/metrics/fid.json", "unknown experiment 'cifar10-uncond-d2oo' (did you mean cifar10-uncond-d2o"),
    ("results/grids/cifar10-d2o.npz", "unknown experiment 'cifar10-d2o'"),
    ("results/checkpoints/edm-cifar10.safetensors", "unknown checkpoint 'edm-cifar10'"),
])
def test_unknown_names_are_named_with_the_choices(target, expected):
    message = target_error(target, load_config(REPO / "config/config.yaml"))
    assert message.startswith(f"{target}: {expected}") and "valid choices: " in message


@pytest.mark.parametrize("target", ["results/tables/table4.tex", "results/figures/fig1.png", "results/scorecard.md",
                                    "results/cifar10-uncond-d2o/best/metrics/fid.json", "results/refs/cifar10-inception.npz",
                                    "results/checkpoints/edm-cifar10-uncond.safetensors", "resources/datasets/cifar10.zip"])
def test_known_names_pass(target):
    assert target_error(target, load_config(REPO / "config/config.yaml")) is None


def _dry_run(*args):
    cmd = [str(Path(sys.executable).with_name("snakemake")), *args, "-n", "--cores", "1"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def test_a_typo_in_a_target_lists_the_valid_names():
    code, log = _dry_run("results/demo/demo-d2oo/model.safetensors", "--configfile", "config/demo.yaml")
    assert code != 0 and "unknown experiment 'demo-d2oo' (did you mean demo-d2o" in log
    code, log = _dry_run("results/tables/tabel4.tex")
    assert code != 0 and "unknown table 'tabel4' (did you mean table4" in log


def test_sample_figures_need_samples_not_metrics():
    code, log = _dry_run("results/figures/fig5.pdf", "--quiet", "rules")
    rules = {line.split()[0] for line in log.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert code == 0 and "sample_grid" in rules and "metric" not in rules, log[-2000:]


def test_demo_needs_the_demo_registry():
    code, log = _dry_run("demo")
    assert code != 0 and "`demo` is the offline demo's target: run `snakemake --configfile config/demo.yaml" in log
    code, log = _dry_run("demo", "--configfile", "config/demo.yaml", "--quiet", "rules")
    assert code == 0 and "train" in log


def _jobs(log):
    """(rule, wildcards) -> {"priority": float, "input": [paths]} of a dry run's job blocks."""
    jobs = {}
    for job in log.split("\n["):                                   # one block per job, after its time stamp
        lines = [line.strip() for line in job.splitlines()]
        rule = next((line.split()[-1].rstrip(":") for line in lines if line.endswith(":") and "rule " in line), None)
        wildcards = next((line.split(": ", 1)[1] for line in lines if line.startswith("wildcards:")), "")
        if rule:
            jobs[(rule, wildcards)] = {
                "priority": next((float(line.split()[-1]) for line in lines if line.startswith("priority:")), 0.0),
                "input": next((line.split(": ", 1)[1].split(", ") for line in lines if line.startswith("input:")), [])}
    return jobs


@pytest.fixture(scope="module")
def demo_jobs():
    """The demo DAG's planned jobs (one dry run for the tests that read them)."""
    code, log = _dry_run("demo", "--configfile", "config/demo.yaml")
    assert code == 0, log[-2000:]
    return _jobs(log)


def test_the_longest_work_is_scheduled_first(demo_jobs):
    """On the demo's 2 cores, the dataset, the tiny EDM's pre-training and the discriminator's backbone start first
    (every training waits for them), then the trainings longest first (planned kimg: 469-iteration runs before the 31-iteration ablation rows)."""
    priority = {job: v["priority"] for job, v in demo_jobs.items()}
    assert priority[("prepare_dataset", "dataset=shapes16")] == 10
    assert priority[("pretrain_edm", "pretrain_ckpt=tiny-edm")] == 10
    assert priority[("train", "train_experiment=demo-d2o")] == 15 == priority[("train", "train_experiment=demo-scratch")]
    assert priority[("train", "train_experiment=demo-no-r1")] == 1
    assert priority[("train_demo_cnn", "demo_cnn=demo-cnn")] == 10       # the D backbone: scratch's last input
    assert priority[("train_demo_cnn", "demo_cnn=demo-metric-cnn")] == 0  # read by the evaluations only


def test_a_random_init_run_reads_the_network_header_not_the_weights(demo_jobs):
    """demo-scratch (init_weights: random) needs only tiny-edm's architecture, so it starts beside the pre-training
    instead of after it; the pre-trained runs read the weights."""
    scratch = demo_jobs[("train", "train_experiment=demo-scratch")]["input"]
    assert "results/demo/checkpoints/tiny-edm.header.safetensors" in scratch, scratch
    assert "results/demo/checkpoints/tiny-edm.safetensors" not in scratch, scratch
    assert demo_jobs[("checkpoint_header", "ckpt=tiny-edm")]["input"] == []          # from the registry: no pre-training
    assert "results/demo/checkpoints/tiny-edm.safetensors" in demo_jobs[("train", "train_experiment=demo-d2o")]["input"]
