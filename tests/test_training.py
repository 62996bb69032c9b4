"""The training loop on CPU at toy scale: a GAN that moves, bitwise-identical resume, and a run bound to its
settings (run identities, d2o.run_state)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import numpy as np
import torch

from d2o.config import load_config, resolve_experiment
from d2o.datasets import make_shapes, write_dataset_zip
from d2o.edm import model_io
from d2o.io import atomic_write_json
from d2o.settings import Experiment, SettingsError
from d2o.training import RESUME_EXIT_CODE, Trainer

NET = dict(img_resolution=16, img_channels=3, label_dim=0, model_type="SongUNet", model_channels=8, channel_mult=[1, 2],
           num_blocks=1, attn_resolutions=[8], embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
           decoder_type="standard", resample_filter=[1, 3, 3, 1], dropout=0.0, augment_dim=9)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    imgs, labels = make_shapes(64, 16, seed=0)
    write_dataset_zip(root / "data.zip", imgs, labels)
    torch.manual_seed(0)
    model_io.save_model(model_io.build("EDMPrecond", **NET), root / "init.safetensors")
    exp = resolve_experiment(load_config("config/demo.yaml"), "demo-d2o")
    exp["discriminator"] = dict(exp["discriminator"], backbones=["tiny"])  # random backbone: no DAG-trained file needed
    exp.update(batch=8, duration_mimg=8 * 12 / 1e6, state_minutes=1e-4, r1_interval=4, log_every_kimg=0.008,
               snapshot_kimg={"first": 0.032, "every": 0.048}, dataset_images=64)
    _write_parts(root, exp)
    return root, exp


def _write_parts(folder, exp):
    """The settings files of the DAG (rule settings) for the train.py CLI."""
    e = Experiment.from_resolved(exp)
    for part in ("training", "execution"):
        atomic_write_json(folder / f"{part}.json", e.part(part))


def _trainer(root, exp: dict, runs, d_init=None):
    """A Trainer of the resolved experiment dict `exp` (typed by d2o.settings), its run directories under `runs`."""
    e = Experiment.from_resolved(exp)
    return Trainer(e.name, e.training, e.execution, runs, root / "data.zip", root / "init.safetensors", d_init_path=d_init)


def _run(root, exp, runs, stop_after=None, d_init=None):
    torch.set_num_threads(1)
    t = _trainer(root, exp, runs, d_init)
    return t, t.run(runs / "model.safetensors", stop_after_iters=stop_after)


def _stats(t):
    return [json.loads(l) for l in t.run_dir.stats_file.read_text().splitlines()]


def _cli_args(root, run, parts=None):
    parts = parts or root
    return ["--training", str(parts / "training.json"), "--execution", str(parts / "execution.json"),
            "--dataset", str(root / "data.zip"), "--init", str(root / "init.safetensors"),
            "--runs-dir", str(run), "--output", str(run / "model.safetensors"), "--snapshots", str(run / "snaps")]


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_gan_moves_and_writes_outputs(toy, tmp_path):
    root, exp = toy
    t, code = _run(root, exp, tmp_path / "run")
    assert code == 0 and t.it == 12 and t.nimg == 96
    stats = _stats(t)
    assert len(stats) == 12 and all(k in stats[0] for k in ("loss_G", "loss_D", "logits_real", "logits_fake", "img_per_s", "eta_s"))
    assert any("loss_r1" in s for s in stats)                     # lazy R1 at it 4, 8
    assert len({round(s["loss_D"], 6) for s in stats}) > 1        # losses move
    gap = [s["logits_real"] - s["logits_fake"] for s in stats]
    assert max(gap[-4:]) > min(gap[:2])                            # D learns to separate real from fake
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["images"] == 96 and summary["offline"] is True
    assert summary["model_identity"] == t.identity["model"] and summary["run_identity"] == t.run_dir.path.name
    assert set(summary["inputs"]) == {"dataset", "init"} and summary["settings"]["training"]["lr_g"] == exp["lr_g"]
    prov = summary["provenance"]
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert prov["hardware"]["device"] == "cpu" and "commit" in prov["code"]
    g = model_io.load_network(tmp_path / "run" / "model.safetensors")
    assert type(g).__name__ == "D2OPrecond"
    ema_changed = any(not torch.equal(a, b.cpu()) for a, b in zip(g.state_dict().values(), t.G.state_dict().values()))
    assert ema_changed


def test_a_random_init_run_from_the_header_equals_one_from_the_checkpoint(toy, tmp_path):
    """init_weights random: the run reads only the checkpoint's network header (rule checkpoint_header), and starts from
    the same fresh weights as it would from the whole checkpoint file."""
    root, exp = toy
    exp = dict(exp, init_weights="random")
    header = model_io.save_header("EDMPrecond", NET, tmp_path / "init.header.safetensors")
    e = Experiment.from_resolved(exp)
    assert e.training.fresh_init
    a = Trainer(e.name, e.training, e.execution, tmp_path / "a", root / "data.zip", root / "init.safetensors")
    b = Trainer(e.name, e.training, e.execution, tmp_path / "b", root / "data.zip", header)
    sa, sb = a.G.state_dict(), b.G.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    init = model_io.load_network(root / "init.safetensors").state_dict()
    assert not torch.equal(sa["model.enc.16x16_conv.weight"], init["model.enc.16x16_conv.weight"])   # fresh, not copied


def test_the_real_ncsnpp_starts_random_init_from_its_header_alone(tmp_path):
    """The paper's CIFAR-10 NCSN++ (EDM's released kwargs, random weights): the generator of a random-init run built
    from the header-only file equals the one built from the whole network, as the Trainer builds them."""
    from d2o.edm.released import released_network
    from d2o.generator import build_generator

    kwargs = released_network("edm-cifar10-uncond")
    net = model_io.build("EDMPrecond", **kwargs)
    header = model_io.save_header("EDMPrecond", kwargs, tmp_path / "edm.header.safetensors")
    assert header.stat().st_size < 100_000                        # the architecture, not ~56M weights
    fresh = model_io.build_fresh(header)                          # built before the seed, as in the Trainer
    torch.manual_seed(7)
    a = build_generator(net, 0, "random").state_dict()
    torch.manual_seed(7)
    b = build_generator(fresh, 0, "random").state_dict()
    assert sum(v.numel() for v in a.values()) > 50e6
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_stop_and_resume_is_bitwise_identical(toy, tmp_path):
    root, exp = toy
    a, _ = _run(root, exp, tmp_path / "a")
    _, code = _run(root, exp, tmp_path / "b", stop_after=5)
    assert code == RESUME_EXIT_CODE and not (tmp_path / "b" / "model.safetensors").exists()
    t, code = _run(root, exp, tmp_path / "b")
    assert code == 0 and t.it == 12
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")
    a_state = torch.load(a.run_dir.state_file, weights_only=True)
    b_state = torch.load(t.run_dir.state_file, weights_only=True)
    for part in ("G", "G_ema", "D"):
        for k in a_state[part]:
            assert torch.equal(a_state[part][k], b_state[part][k]), (part, k)
    assert [s["it"] for s in _stats(t)] == list(range(1, 13))   # no duplicated log lines after resume
    assert [s["it"] for s in json.loads((tmp_path / "b" / "train.json").read_text())["starts"]] == [5]


def _cli_with_reference(root, tmp_path):
    """The train.py command of a run folder (one thread), after an uninterrupted reference run in tmp_path/ref."""
    cmd = lambda run: [sys.executable, "workflow/scripts/train.py", *_cli_args(root, run)]  # noqa: E731
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)
    return cmd, env


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(toy, tmp_path):
    """SIGKILL the training CLI at several moments; the restarted run ends bitwise-identical to an uninterrupted one."""
    root, exp = toy
    cmd, env = _cli_with_reference(root, tmp_path)
    run = tmp_path / "killed"
    killed_mid_run = 0
    for target in (2, 5, 8):  # kill once the run has logged this many iterations (state is saved every iteration)
        p = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stats = [*run.glob("*/stats.jsonl"), None][0]
        while p.poll() is None and (stats is None or len(stats.read_text().splitlines()) < target):
            stats = [*run.glob("*/stats.jsonl"), None][0]
            time.sleep(0.02)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        p.wait()
        assert not (run / "model.safetensors").exists()
    assert killed_mid_run == 3
    subprocess.run(cmd(run), check=True, env=env, capture_output=True)
    assert _digest(tmp_path / "ref" / "model.safetensors") == _digest(run / "model.safetensors")
    assert sorted(p.name for p in (run / "snaps").iterdir()) == sorted(p.name for p in (tmp_path / "ref" / "snaps").iterdir())


def test_sigusr1_saves_state_and_exits_75(toy, tmp_path):
    root, exp = toy
    t = _trainer(root, exp, tmp_path / "s")
    t._on_signal(signal.SIGUSR1, None)
    assert t.run(tmp_path / "s" / "model.safetensors") == RESUME_EXIT_CODE
    assert t.run_dir.state_file.exists() and t.it == 1


def test_accumulation_rounds_train_and_resume_bitwise(toy, tmp_path):
    """batch_gpu < batch: two accumulation rounds per iteration; the run trains, logs and resumes bitwise."""
    root, exp = toy
    exp = dict(exp, batch_gpu=4, duration_mimg=8 * 6 / 1e6)
    t, code = _run(root, exp, tmp_path / "a")
    assert code == 0 and t.rounds == 2 and t.nimg == 48
    stats = _stats(t)
    assert any("loss_r1" in s for s in stats) and all(np.isfinite(s["loss_D"]) for s in stats)
    _run(root, exp, tmp_path / "b", stop_after=3)
    _run(root, exp, tmp_path / "b")
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")
    with pytest.raises(SettingsError, match=r"batch_gpu: batch 8 is not a multiple of .* x batch_gpu \(3\)"):
        _trainer(root, dict(exp, batch_gpu=3), tmp_path / "c")


@pytest.mark.parametrize("d_precision, tf32", [("fp32", False), ("tf32", True), ("bf16", False)])
def test_d_precision_sets_tf32(toy, tmp_path, d_precision, tf32):
    """`fp32` is the authors' (TF32 off for cuDNN and matmuls); `tf32` turns it on; `bf16` autocasts D (CUDA only)."""
    root, exp = toy
    t = _trainer(root, dict(exp, d_precision=d_precision), tmp_path / "p")
    assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    with t._autocast(d_precision):
        assert torch.is_autocast_enabled("cuda") is (d_precision == "bf16" and t.device.type == "cuda")


def _step_grads(trainer, it):
    """Run iteration `it` with the optimisers' steps disabled; return the gradients each step would have applied."""
    seen = []
    for opt in (trainer.opt_G, trainer.opt_D):
        opt.step = lambda opt=opt: seen.append([p.grad.clone() for group in opt.param_groups for p in group["params"]])
    trainer.it = it
    trainer.step()
    return seen


def test_accumulation_rounds_equal_a_two_gpu_iteration(toy, tmp_path, monkeypatch):
    """One process with 2 rounds (batch_gpu = batch / 2) applies the mean of the gradients that ranks 0 and 1 of a
    2-GPU run compute (G step, D step and R1 step; DiffAugment on), up to float summation order."""
    from d2o import distributed
    from d2o.r1 import sanitize_grads

    root, exp = toy
    exp = dict(exp, discriminator=dict(exp["discriminator"], diffaug=True))  # global random draws per virtual rank
    one = _step_grads(_trainer(root, dict(exp, batch_gpu=exp["batch"] // 2), tmp_path / "one"), exp["r1_interval"])
    monkeypatch.setattr(distributed, "reduce_grads", lambda params, world: sanitize_grads(params))  # each rank's own
    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "init", lambda rank=rank: (rank, 2, torch.device("cpu")))
        ranks.append(_step_grads(_trainer(root, dict(exp, batch_gpu=exp["batch"] // 2), tmp_path / f"rank{rank}"),
                                 exp["r1_interval"]))
    assert len(one) == 3                               # G step, D step, lazy R1 step
    for got, g0, g1 in zip(one, *ranks):
        for a, b0, b1 in zip(got, g0, g1):
            torch.testing.assert_close(a, (b0 + b1) / 2, rtol=1e-4, atol=1e-6)
        assert any(not torch.equal(b0, b1) for b0, b1 in zip(g0, g1))   # the two ranks did see different data


@pytest.mark.parametrize("aggregation", ["sample_sum", "mean"])
def test_round_batch_passes_equal_separate_rounds(toy, tmp_path, aggregation):
    """round_batch: 4 virtual GPUs of 2 samples in 2 passes of 4 (grouped BatchNorm in D's heads) apply the gradients
    of 4 separate rounds (G, D and R1 steps), for both loss aggregations; invalid sizes are refused."""
    root, exp = toy
    exp = dict(exp, batch_gpu=2, loss=dict(exp["loss"], aggregation=aggregation))
    four = _trainer(root, exp, tmp_path / "four")
    two = _trainer(root, dict(exp, round_batch=4), tmp_path / "two")
    assert two.identity["run"] == four.identity["run"]     # an execution knob: the same iteration, the same run
    assert (four.virtual, four.group, four.rounds) == (4, 1, 4) and (two.virtual, two.group, two.rounds) == (4, 2, 2)
    a, b = _step_grads(four, exp["r1_interval"]), _step_grads(two, exp["r1_interval"])
    assert len(a) == len(b) == 3                       # G step, D step, lazy R1 step
    for ga, gb in zip(a, b):
        for x, y in zip(ga, gb):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6)
    with pytest.raises(SettingsError, match="round_batch: 3 must be a multiple of batch_gpu"):
        _trainer(root, dict(exp, round_batch=3), tmp_path / "c")
    with pytest.raises(SettingsError, match="need the projected discriminator"):
        _trainer(root, dict(exp, round_batch=4, discriminator={"type": "stylegan2", "channel_max": 32}), tmp_path / "d")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(toy, tmp_path):
    """The multi-GPU code path (torchrun, per-rank batch slices, gradient all-reduce) on CPU with gloo."""
    root, exp = toy
    run = tmp_path / "ddp"
    _write_parts(tmp_path, dict(exp, batch_gpu=4))  # the registry's per-GPU split of the 2-GPU run
    cmd = [sys.executable, "workflow/scripts/train.py", "--gpus", "2", "--threads", "2", *_cli_args(root, run, tmp_path)]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "D2O_ALLOW_CPU": "1"}, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "train.json").read_text())
    assert summary["world_size"] == 2 and summary["images"] == 96
    assert model_io.load_network(run / "model.safetensors") is not None


@pytest.mark.parametrize("method", ["cd", "gan+cd"])
def test_cd_methods_train(toy, tmp_path, method):
    """CD (frozen EDM teacher, Heun step, LPIPS; App B) alone and added to the GAN loss (Fig 3B)."""
    root, exp = toy
    exp = dict(exp, method=method, duration_mimg=8 * 2 / 1e6, cd={"N": 18, "rho": 7, "weight": 1.0, "lpips_resolution": 32, "i_min": 1})
    if method == "cd":
        exp = {k: v for k, v in exp.items() if k not in ("discriminator", "loss", "r1_gamma", "r1_interval", "lr_d", "lazy_adam")}
    t, code = _run(root, exp, tmp_path / method)
    stats = _stats(t)
    assert code == 0 and all(s["loss_G_cd"] > 0 for s in stats)
    assert ("loss_D" in stats[0]) == (method == "gan+cd")


def test_multistep_generator_trains(toy, tmp_path):
    """A 2-step GAN teacher with a fixed middle sigma (Fig 2B) trains and samples through the same generator code."""
    from d2o.generator import generator_sigmas
    from d2o.sampling import sample_experiment

    root, exp = toy
    exp = dict(exp, generator_steps=2, middle_sigma=2.5, duration_mimg=8 * 2 / 1e6)
    t, code = _run(root, exp, tmp_path / "ms")
    assert code == 0 and t.sigmas == [80.0, 2.5] == generator_sigmas(2, 2.5)
    sampling = Experiment.from_resolved(exp).sampling
    assert sampling.method == "multistep"
    x = sample_experiment(model_io.load_network(tmp_path / "ms" / "model.safetensors"), sampling, [0, 1])
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    assert generator_sigmas(4) == pytest.approx([80.0, 17.5278, 2.5152, 0.1698], abs=1e-4)   # spec §7 grid


def test_pretrained_stylegan2_discriminator_run(toy, tmp_path):
    """Table 1 'StyleGAN2 (Pre-trained)': D starts from a converted StyleGAN2-ADA checkpoint (here a class-conditional
    one in its pickle format, for the unconditional toy run: label mapping dropped, b4.out fresh), trains, records
    where it came from, and resumes bitwise."""
    from d2o.stylegan2_discriminator import StyleGAN2Discriminator
    from d2o.stylegan2ada_checkpoint import convert_stylegan2ada_discriminator
    from helpers_edm_pickle import write_stylegan2ada_pickle

    root, exp = toy
    torch.manual_seed(1)
    src = StyleGAN2Discriminator(16, label_dim=4, channel_base=256, channel_max=32, conv_clamp=256, mbstd_group_size=8,
                                 architecture="orig")
    kwargs = dict(c_dim=4, img_resolution=16, img_channels=3, architecture="orig", channel_base=256, channel_max=32,
                  num_fp16_res=4, conv_clamp=256, epilogue_kwargs={"mbstd_group_size": 8})
    ckpt = convert_stylegan2ada_discriminator(write_stylegan2ada_pickle(tmp_path / "sg2.pkl", src, kwargs),
                                              tmp_path / "sg2.safetensors")
    exp = dict(exp, discriminator={"type": "stylegan2", "channel_max": 32, "ada_target": 0.6, "init": "sg2ada-toy"},
               r1_gamma=0.01, duration_mimg=8 * 6 / 1e6)
    with pytest.raises(ValueError, match="discriminator.init is 'sg2ada-toy' but no converted checkpoint was given"):
        _trainer(root, exp, tmp_path / "x")
    t = _trainer(root, exp, tmp_path / "a", d_init=ckpt)
    assert "discriminator_init" in t.identity["inputs"]           # the checkpoint's content is part of the run
    start = {k: v.clone() for k, v in t.D.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in src.state_dict().items() if not k.startswith(("mapping.", "b4.out.")))
    assert t.run(tmp_path / "a" / "model.safetensors") == 0
    assert not torch.equal(t.D.b16.conv0.weight, start["b16.conv0.weight"])          # D trains from the checkpoint
    summary = json.loads((tmp_path / "a" / "train.json").read_text())["discriminator_init"]
    assert summary["checkpoint"] == "sg2ada-toy" and summary["reinitialised"] == ["b4.out.bias", "b4.out.weight"]
    assert summary["source"]["source_init_kwargs"]["architecture"] == "orig"
    _run(root, exp, tmp_path / "b", stop_after=3, d_init=ckpt)
    _run(root, exp, tmp_path / "b", d_init=ckpt)
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")


def test_ada_run_adapts_p_and_resumes_bitwise(toy, tmp_path):
    """Table 1 rows: StyleGAN2 discriminator behind ADA; p moves with the real-logit signs and survives a resume."""
    root, exp = toy
    exp = dict(exp, discriminator={"type": "stylegan2", "channel_max": 32, "ada_target": -1.0, "ada_kimg": 0.05},
               r1_gamma=0.01)
    t, _ = _run(root, exp, tmp_path / "a")
    stats = _stats(t)
    ps = [s["ada_p"] for s in stats]
    assert len(set(ps)) > 1 and max(ps) > 0          # updated every 4 iterations
    _run(root, exp, tmp_path / "b", stop_after=6)
    _run(root, exp, tmp_path / "b")
    if torch.cuda.is_available():  # CUDA's grid_sample backward accumulates with atomics: bitwise only on CPU
        return
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")


@pytest.mark.slow
def test_compiled_training_matches_eager(toy, tmp_path):
    """torch.compile of G and of D's frozen projections and trainable heads (R1 eager) computes the eager iteration:
    from the same state, with G held still for that iteration so both D steps see the same fakes, the statistics and
    the G- and D-step gradients agree to 1e-4 relative on CPU (mode default), 2e-2 on CUDA (bf16 autocast of G and D;
    mode reduce-overhead: CUDA graphs; run by benchmarks/gpu_check.sh), and the compiled run goes through R1. Whole
    trajectories are not compared: Adam turns rounding differences of near-zero gradients into full-size updates
    (lr x sign), so two correct implementations drift apart within a few iterations."""
    root, exp = toy
    torch.set_num_threads(1)
    mode, rtol = ("reduce-overhead", 2e-2) if torch.cuda.is_available() else ("default", 1e-4)
    exp = dict(exp, d_precision="bf16")                    # on CUDA: bf16 D, frozen projection weights stored bf16
    eager = _trainer(root, exp, tmp_path / "off")
    comp = _trainer(root, dict(exp, compile=mode), tmp_path / "on")
    assert eager.G_fast is eager.G and not eager.D._compiled and comp.G_fast is not comp.G and comp.D._compiled
    stats = [comp.step() for _ in range(5)]                 # iterations 0-4, R1 at 4 (r1_interval 4)
    assert "loss_r1" in stats[4] and all(torch.isfinite(v) for s in stats for v in s.values())
    for _ in range(5):
        eager.step()
    comp.load_state_dict(eager.state_dict())                # iteration 5 (no R1) from the same state
    assert list(comp.state_dict()["D"]) == list(eager.state_dict()["D"])
    for t in (eager, comp):  # G's Adam step would turn rounding differences of near-zero G gradients into full-size
        for group in t.opt_G.param_groups:  # updates (lr x sign), so the D step's fakes would differ: G stays put
            group["lr"] = 0.0
    a, b = ({k: float(v) for k, v in t.step().items()} for t in (eager, comp))
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rtol * abs(a[k]) + 1e-7 for k in a), {k: (a[k], b[k]) for k in a}
    # the G step's gradients and the D step's, from the same state and the same G (measured on CPU: 6.9e-6 and 2.9e-6)
    for ta, tb in ((eager.G, comp.G), (eager.D, comp.D)):
        ga = torch.cat([p.grad.flatten() for p in ta.parameters() if p.grad is not None])
        gb = torch.cat([p.grad.flatten() for p in tb.parameters() if p.grad is not None])
        assert ga.shape == gb.shape and (ga - gb).norm() <= rtol * ga.norm(), float((ga - gb).norm() / ga.norm())


def test_training_state_leaves_out_the_frozen_projections(toy, tmp_path):
    """The frozen projections are rebuilt on every start, never saved; older states that hold them still load; a
    discriminator state of another architecture is refused with the file named."""
    root, exp = toy
    t = _trainer(root, exp, tmp_path / "s")
    t.step()
    state = t.state_dict()
    assert state["D"] and not any(k.startswith("projections.") for k in state["D"])
    old = dict(state, D={**state["D"], **{k: v for k, v in t.D.state_dict().items() if k.startswith("projections.")}})
    fresh = _trainer(root, exp, tmp_path / "s")
    fresh.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(fresh.D.state_dict().values(), t.D.state_dict().values()))
    broken = dict(state, D=dict(state["D"]))
    broken["D"].pop(next(k for k in state["D"] if k.startswith("discriminators.")))
    with pytest.raises(RuntimeError, match="training-state.pt: discriminator state"):
        fresh.load_state_dict(broken)


def _runs(root_dir):
    return sorted(p.name for p in root_dir.iterdir() if p.is_dir())


def test_a_changed_setting_never_resumes_the_old_state(toy, tmp_path, caplog):
    """Changing lr_g starts a new run (its own identity directory); the old one is kept and the log says which key
    differs; the new model equals a fresh run with the new lr_g in an empty directory (bitwise, CPU)."""
    root, exp = toy
    old, _ = _run(root, exp, tmp_path / "runs")
    new_exp = dict(exp, lr_g=exp["lr_g"] / 2)
    with caplog.at_level("INFO", logger="d2o.train"):
        new, code = _run(root, new_exp, tmp_path / "runs")
    assert code == 0 and new.it == 12 and new.resumed_at[0]["it"] == 0     # trained from iteration 0
    assert new.identity["run"] != old.identity["run"] and old.run_dir.state_file.exists()
    assert _runs(tmp_path / "runs") == sorted([old.identity["run"], new.identity["run"]])
    assert f"lr_g: {exp['lr_g']} -> {exp['lr_g'] / 2}" in caplog.text and "not resumed, kept" in caplog.text
    _run(root, new_exp, tmp_path / "fresh")
    assert _digest(tmp_path / "runs" / "model.safetensors") == _digest(tmp_path / "fresh" / "model.safetensors")


def test_a_finished_run_asked_again_retrains_from_scratch(toy, tmp_path, caplog):
    """The outputs of a finished run were deleted (--forcerun train): its state is kept aside, training restarts."""
    root, exp = toy
    first, _ = _run(root, exp, tmp_path / "runs")
    digest = _digest(tmp_path / "runs" / "model.safetensors")
    with caplog.at_level("WARNING", logger="d2o.train"):
        again, code = _run(root, exp, tmp_path / "runs")
    assert code == 0 and again.resumed_at[0]["it"] == 0 and again.it == 12
    assert "finished and its outputs are asked for again" in caplog.text
    kept = [n for n in _runs(tmp_path / "runs") if ".previous-" in n]
    assert len(kept) == 1 and (tmp_path / "runs" / kept[0] / "training-state.pt").exists()
    assert _digest(tmp_path / "runs" / "model.safetensors") == digest          # deterministic CPU: the same model


def test_a_longer_duration_continues_the_run(toy, tmp_path):
    """The duration only says where a run stops: raising it continues the finished state, and the result equals a
    fresh run of the longer duration (bitwise); the model identity changes, the run identity does not."""
    root, exp = toy
    short, _ = _run(root, dict(exp, duration_mimg=8 * 6 / 1e6), tmp_path / "runs")
    long, code = _run(root, exp, tmp_path / "runs")
    assert code == 0 and long.resumed_at[0]["it"] == 6 and long.it == 12
    assert long.identity["run"] == short.identity["run"] and long.identity["model"] != short.identity["model"]
    _run(root, exp, tmp_path / "fresh")
    assert _digest(tmp_path / "runs" / "model.safetensors") == _digest(tmp_path / "fresh" / "model.safetensors")
    shorter, _ = _run(root, dict(exp, duration_mimg=8 * 4 / 1e6), tmp_path / "runs")   # a state past the new end
    assert shorter.resumed_at[0]["it"] == 0 and shorter.it == 4


def test_the_identity_covers_the_inputs_content(toy, tmp_path):
    """Another dataset content (same path) is another run; execution knobs are not part of the identity."""
    root, exp = toy
    a = _trainer(root, exp, tmp_path / "runs")
    b = _trainer(root, dict(exp, state_minutes=5, compile=False), tmp_path / "runs")
    assert a.identity == b.identity
    imgs, labels = make_shapes(64, 16, seed=1)
    write_dataset_zip(root / "data2.zip", imgs, labels)
    e = Experiment.from_resolved(exp)
    c = Trainer(e.name, e.training, e.execution, tmp_path / "runs", root / "data2.zip", root / "init.safetensors")
    assert c.identity["run"] != a.identity["run"] and c.identity["inputs"]["dataset"] != a.identity["inputs"]["dataset"]


def test_a_state_of_another_run_is_refused(toy, tmp_path):
    root, exp = toy
    a = _trainer(root, exp, tmp_path / "a")
    b = _trainer(root, dict(exp, seed=7), tmp_path / "b")
    with pytest.raises(RuntimeError, match=f"a state of run {a.identity['run']}, not of this run"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("lazy_adam, r1_gamma, corrected", [("always", None, True), ("with_r1", None, False),
                                                            ("with_r1", 1e-4, True)])
def test_lazy_adam_correction_as_coded(toy, tmp_path, lazy_adam, r1_gamma, corrected):
    """The released code corrects D's Adam for lazy R1 (lr x 16/17, beta2 0.99^(16/17)) even without R1."""
    root, exp = toy
    t = _trainer(root, dict(exp, lazy_adam=lazy_adam, r1_gamma=r1_gamma, r1_interval=16), tmp_path / "x")
    g = t.opt_D.param_groups[0]
    ratio = 16 / 17 if corrected else 1.0
    assert g["lr"] == pytest.approx(exp["lr_d"] * ratio) and g["betas"][1] == pytest.approx(0.99 ** ratio)


def test_fakes_get_the_real_minibatch_labels_as_coded(toy, tmp_path):
    root, exp = toy
    cond = dict(exp, conditional=True, label_dim=4)
    real = _trainer(root, cond, tmp_path / "a")
    gens = [torch.Generator().manual_seed(0)]
    c = torch.nn.functional.one_hot(torch.tensor([1, 2, 3, 0, 1, 2, 3, 0]), 4).float()
    assert real._fake_labels(gens, c) is c
    drawn = _trainer(root, dict(cond, fake_labels="drawn"), tmp_path / "b")
    d = drawn._fake_labels(gens, c)
    assert d.shape == c.shape and not torch.equal(d, c) and torch.equal(d.sum(1), torch.ones(8))


def test_conditional_heads_start_from_the_class_embedding(toy, tmp_path):
    """discriminator.class_embedding: every conditional head starts from the (1000, 320) embedding (the authors'
    StyleGAN-XL rows); its content is part of the run identity; train.json says where it came from."""
    root, exp = toy
    emb = torch.randn(1000, 320, generator=torch.Generator().manual_seed(3))
    torch.save(emb, tmp_path / "emb.pt")
    cond = dict(exp, conditional=True, label_dim=4, offline=False,
                discriminator=dict(exp["discriminator"], class_embedding="in-embedding-test"))
    e = Experiment.from_resolved(cond)
    args = (e.name, e.training, e.execution, tmp_path / "runs", root / "data.zip", root / "init.safetensors")
    with pytest.raises(ValueError, match="network 'in-embedding-test' needs pretrained weights .* add `weights.in-embedding-test`"):
        Trainer(*args)
    t = Trainer(*args, weights={"in-embedding-test": tmp_path / "emb.pt"})
    heads = [h for d in t.D.discriminators.values() for h in d.heads]
    assert heads and all(torch.equal(h.embed.weight, emb) for h in heads)
    assert t.class_embedding["weights"] == "in-embedding-test" and "weights:in-embedding-test" in t.identity["inputs"]
    offline = Experiment.from_resolved(dict(cond, offline=True))                 # offline: random, and said so
    r = Trainer(offline.name, offline.training, offline.execution, tmp_path / "r", root / "data.zip",
                root / "init.safetensors")
    assert r.class_embedding == "random (offline registry)" and not any("weights" in k for k in r.identity["inputs"])


def test_each_virtual_gpu_has_its_own_random_projection(toy, tmp_path):
    """projections: per_gpu (as coded): virtual GPU v's CCM/CSM come from seed (seed, v), whatever the GPU count or
    pass size; the feature network is shared; `shared` builds one projection (Projected GAN)."""
    root, exp = toy
    four = _trainer(root, dict(exp, batch_gpu=2), tmp_path / "a")
    proj = four.D.projections["tiny"]
    assert len(proj.random) == four.virtual == 4
    w = [r.ccm[0].weight for r in proj.random]
    assert all(not torch.equal(w[0], x) for x in w[1:])
    pairs = _trainer(root, dict(exp, batch_gpu=2, round_batch=4), tmp_path / "b")      # 2 passes of 2 virtual GPUs
    assert all(torch.equal(a.ccm[0].weight, b.ccm[0].weight) for a, b in zip(proj.random, pairs.D.projections["tiny"].random))
    shared = _trainer(root, dict(exp, batch_gpu=2, discriminator=dict(exp["discriminator"], projections="shared")),
                      tmp_path / "c")
    assert len(shared.D.projections["tiny"].random) == 1 and shared.identity["run"] != four.identity["run"]
    with pytest.raises(ValueError, match="projection ids"):
        four.D.use_projections([4])


def test_one_trainer_per_experiment(toy, tmp_path, caplog):
    """A second trainer on the same experiment's runs refuses at once, naming the holder; the lock goes with the run."""
    import os

    caplog.set_level("INFO", logger="d2o")  # train.py's logging setup; the run's own train.log gets the records
    root, exp = toy
    first = _trainer(root, exp, tmp_path / "runs")
    first.run_dir.acquire()
    second = _trainer(root, exp, tmp_path / "runs")
    with pytest.raises(RuntimeError, match=rf"\.trainer\.lock: another trainer is running on this experiment \(host .*pid {os.getpid()}"):
        second.run(tmp_path / "runs" / "model.safetensors")
    first.run_dir.release()
    assert second.run(tmp_path / "runs" / "model.safetensors") == 0
    assert "started at iteration 0" in (second.run_dir.path / "train.log").read_text()


@pytest.mark.slow
def test_ctrl_c_saves_the_state(toy, tmp_path):
    """SIGINT (Ctrl-C) saves the state like SIGTERM and exits 75; the rerun resumes and ends bitwise as an uninterrupted run."""
    root, exp = toy
    cmd, env = _cli_with_reference(root, tmp_path)
    run = tmp_path / "int"
    p = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and not list(run.glob("*/stats.jsonl")):
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    assert p.wait() == RESUME_EXIT_CODE and list(run.glob("*/training-state.pt"))
    subprocess.run(cmd(run), check=True, env=env, capture_output=True)
    assert _digest(tmp_path / "ref" / "model.safetensors") == _digest(run / "model.safetensors")


def test_a_gpu_experiment_refuses_the_cpu(toy, tmp_path):
    root, _ = toy
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = subprocess.run([sys.executable, "workflow/scripts/train.py", "--gpus", "1", *_cli_args(root, tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "asks for 1 GPU(s) (resources.gpus) and this machine has none" in out.stderr
    assert not (tmp_path / "r").exists()


def test_a_run_refuses_an_incomplete_dataset(toy, tmp_path):
    root, exp = toy
    with pytest.raises(ValueError, match=r"data.zip: 64 images, datasets.shapes16.expected says 2,048: the zip was built "
                                         r"from an incomplete source"):
        _trainer(root, dict(exp, dataset_images=2048), tmp_path / "r")


def test_keep_state_false_deletes_the_finished_state(toy, tmp_path):
    """keep_state: false (the smoke run): the model and train.json are written, the finished state is not kept."""
    root, exp = toy
    t, code = _run(root, dict(exp, keep_state=False, duration_mimg=8 * 2 / 1e6), tmp_path / "runs")
    assert code == 0 and (tmp_path / "runs" / "model.safetensors").exists() and not t.run_dir.state_file.exists()
