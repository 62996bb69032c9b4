"""The training loop on CPU at toy scale: a GAN that moves, and bitwise-identical resume."""
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
    exp.update(batch=8, duration_mimg=8 * 12 / 1e6, state_minutes=1e-4, r1_interval=4, log_every_kimg=0.008,
               snapshot_kimg={"first": 0.032, "every": 0.048})
    (root / "exp.json").write_text(json.dumps(exp))
    return root, exp


def _run(root, exp, run_dir, stop_after=None):
    torch.set_num_threads(1)
    t = Trainer(exp, run_dir, root / "data.zip", root / "init.safetensors")
    return t, t.run(run_dir / "model.safetensors", [1], stop_after_iters=stop_after)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_gan_moves_and_writes_outputs(toy, tmp_path):
    root, exp = toy
    t, code = _run(root, exp, tmp_path / "run")
    assert code == 0 and t.it == 12 and t.nimg == 96
    stats = [json.loads(l) for l in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert len(stats) == 12 and all(k in stats[0] for k in ("loss_G", "loss_D", "logits_real", "logits_fake", "img_per_s", "eta_s"))
    assert any("loss_r1" in s for s in stats)                     # lazy R1 at it 4, 8
    assert len({round(s["loss_D"], 6) for s in stats}) > 1        # losses move
    gap = [s["logits_real"] - s["logits_fake"] for s in stats]
    assert max(gap[-4:]) > min(gap[:2])                            # D learns to separate real from fake
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["images"] == 96 and summary["offline"] is True and "not comparable" in summary["label"]
    g = model_io.load_network(tmp_path / "run" / "model.safetensors")
    assert type(g).__name__ == "D2OPrecond"
    ema_changed = any(not torch.equal(a, b.cpu()) for a, b in zip(g.state_dict().values(), t.G.state_dict().values()))
    assert ema_changed


def test_stop_and_resume_is_bitwise_identical(toy, tmp_path):
    root, exp = toy
    _run(root, exp, tmp_path / "a")
    _, code = _run(root, exp, tmp_path / "b", stop_after=5)
    assert code == RESUME_EXIT_CODE and not (tmp_path / "b" / "model.safetensors").exists()
    t, code = _run(root, exp, tmp_path / "b")
    assert code == 0 and t.it == 12
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")
    a_state = torch.load(tmp_path / "a" / "training-state.pt", weights_only=True)
    b_state = torch.load(tmp_path / "b" / "training-state.pt", weights_only=True)
    for part in ("G", "G_ema", "D"):
        for k in a_state[part]:
            assert torch.equal(a_state[part][k], b_state[part][k]), (part, k)
    lines = (tmp_path / "b" / "stats.jsonl").read_text().splitlines()
    assert [json.loads(l)["it"] for l in lines] == list(range(1, 13))   # no duplicated log lines after resume


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(toy, tmp_path):
    """SIGKILL the training CLI at several moments; the restarted run ends bitwise-identical to an uninterrupted one."""
    root, exp = toy
    cmd = lambda run: [sys.executable, "workflow/scripts/train.py", "--config", str(root / "exp.json"),  # noqa: E731
                       "--dataset", str(root / "data.zip"), "--init", str(root / "init.safetensors"),
                       "--run-dir", str(run), "--output", str(run / "model.safetensors"), "--snapshots", str(run / "snaps")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)
    run = tmp_path / "killed"
    killed_mid_run = 0
    for target in (2, 5, 8):  # kill once the run has logged this many iterations (state is saved every iteration)
        p = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stats = run / "stats.jsonl"
        while p.poll() is None and (not stats.exists() or len(stats.read_text().splitlines()) < target):
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
    t = Trainer(exp, tmp_path / "s", root / "data.zip", root / "init.safetensors")
    t._on_signal(signal.SIGUSR1, None)
    assert t.run(tmp_path / "s" / "model.safetensors", [1]) == RESUME_EXIT_CODE
    assert (tmp_path / "s" / "training-state.pt").exists() and t.it == 1


def test_accumulation_rounds_train_and_resume_bitwise(toy, tmp_path):
    """batch_gpu < batch: two accumulation rounds per iteration; the run trains, logs and resumes bitwise."""
    root, exp = toy
    exp = dict(exp, batch_gpu=4, duration_mimg=8 * 6 / 1e6)
    t, code = _run(root, exp, tmp_path / "a")
    assert code == 0 and t.rounds == 2 and t.nimg == 48
    stats = [json.loads(l) for l in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    assert any("loss_r1" in s for s in stats) and all(np.isfinite(s["loss_D"]) for s in stats)
    _run(root, exp, tmp_path / "b", stop_after=3)
    _run(root, exp, tmp_path / "b")
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")
    with pytest.raises(ValueError, match="batch_gpu 3"):
        Trainer(dict(exp, batch_gpu=3), tmp_path / "c", root / "data.zip", root / "init.safetensors")


@pytest.mark.parametrize("d_precision, tf32", [("fp32", False), ("tf32", True), ("bf16", False)])
def test_d_precision_sets_tf32(toy, tmp_path, d_precision, tf32):
    """`fp32` is the authors' (TF32 off for cuDNN and matmuls); `tf32` turns it on; `bf16` autocasts D (CUDA only)."""
    root, exp = toy
    t = Trainer(dict(exp, d_precision=d_precision), tmp_path / "p", root / "data.zip", root / "init.safetensors")
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
    import d2o.training as training

    root, exp = toy
    exp = dict(exp, discriminator=dict(exp["discriminator"], diffaug=True))  # global random draws per virtual rank
    args = (root / "data.zip", root / "init.safetensors")
    one = _step_grads(Trainer(dict(exp, batch_gpu=exp["batch"] // 2), tmp_path / "one", *args), exp["r1_interval"])
    monkeypatch.setattr(training, "_allreduce_mean", lambda world: None)  # each rank's own gradients
    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(training, "_dist_info", lambda rank=rank: (rank, 2, torch.device("cpu")))
        ranks.append(_step_grads(Trainer(exp, tmp_path / f"rank{rank}", *args), exp["r1_interval"]))
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
    args = (root / "data.zip", root / "init.safetensors")
    four = Trainer(exp, tmp_path / "four", *args)
    two = Trainer(dict(exp, round_batch=4), tmp_path / "two", *args)
    assert (four.virtual, four.group, four.rounds) == (4, 1, 4) and (two.virtual, two.group, two.rounds) == (4, 2, 2)
    a, b = _step_grads(four, exp["r1_interval"]), _step_grads(two, exp["r1_interval"])
    assert len(a) == len(b) == 3                       # G step, D step, lazy R1 step
    for ga, gb in zip(a, b):
        for x, y in zip(ga, gb):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="round_batch 3 must be a multiple of batch_gpu 2"):
        Trainer(dict(exp, round_batch=3), tmp_path / "c", *args)
    with pytest.raises(ValueError, match="needs the projected discriminator"):
        Trainer(dict(exp, round_batch=4, discriminator=dict(exp["discriminator"], type="stylegan2", channel_max=32)),
                tmp_path / "d", *args)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(toy, tmp_path):
    """The multi-GPU code path (torchrun, per-rank batch slices, gradient all-reduce) on CPU with gloo."""
    root, exp = toy
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "workflow/scripts/train.py",
           "--config", str(root / "exp.json"), "--dataset", str(root / "data.zip"), "--init", str(root / "init.safetensors"),
           "--run-dir", str(run), "--output", str(run / "model.safetensors"), "--snapshots", str(run / "snaps")]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "train.json").read_text())
    assert summary["world_size"] == 2 and summary["images"] == 96
    assert model_io.load_network(run / "model.safetensors") is not None


@pytest.mark.parametrize("method", ["cd", "gan+cd"])
def test_cd_methods_train(toy, tmp_path, method):
    """CD (frozen EDM teacher, Heun step, LPIPS; App B) alone and added to the GAN loss (Fig 3B)."""
    root, exp = toy
    exp = dict(exp, method=method, duration_mimg=8 * 2 / 1e6, cd=dict(exp["cd"], lpips_resolution=32))
    t, code = _run(root, exp, tmp_path / method)
    stats = [json.loads(l) for l in (tmp_path / method / "stats.jsonl").read_text().splitlines()]
    assert code == 0 and all(s["loss_G_cd"] > 0 for s in stats)
    assert ("loss_D" in stats[0]) == (method == "gan+cd")


def test_multistep_generator_trains(toy, tmp_path):
    """A 2-step GAN teacher with a fixed middle sigma (Fig 2B) trains and samples through the same generator code."""
    from d2o.generator import generator_sigmas, sample_experiment

    root, exp = toy
    exp = dict(exp, generator_steps=2, middle_sigma=2.5, duration_mimg=8 * 2 / 1e6)
    t, code = _run(root, exp, tmp_path / "ms")
    assert code == 0 and t.sigmas == [80.0, 2.5] == generator_sigmas(2, 2.5)
    x = sample_experiment(model_io.load_network(tmp_path / "ms" / "model.safetensors"), exp, [0, 1])
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    assert generator_sigmas(4) == pytest.approx([80.0, 17.5278, 2.5152, 0.1698], abs=1e-4)   # spec §7 grid


def test_pretrained_stylegan2_discriminator_run(toy, tmp_path):
    """Table 1 'StyleGAN2 (Pre-trained)': D starts from a converted StyleGAN2-ADA checkpoint (here a class-conditional
    one in its pickle format, for the unconditional toy run: label mapping dropped, b4.out fresh), trains, records
    where it came from, and resumes bitwise."""
    from d2o.discriminators import StyleGAN2Discriminator, convert_stylegan2ada_discriminator
    from helpers_edm_pickle import write_stylegan2ada_pickle

    root, exp = toy
    torch.manual_seed(1)
    src = StyleGAN2Discriminator(16, label_dim=4, channel_base=256, channel_max=32, conv_clamp=256, mbstd_group_size=8,
                                 architecture="orig")
    kwargs = dict(c_dim=4, img_resolution=16, img_channels=3, architecture="orig", channel_base=256, channel_max=32,
                  num_fp16_res=4, conv_clamp=256, epilogue_kwargs={"mbstd_group_size": 8})
    ckpt = convert_stylegan2ada_discriminator(write_stylegan2ada_pickle(tmp_path / "sg2.pkl", src, kwargs),
                                              tmp_path / "sg2.safetensors")
    exp = dict(exp, discriminator=dict(exp["discriminator"], type="stylegan2", channel_max=32, ada_target=0.6,
                                       init="sg2ada-toy"), r1_gamma=0.01, duration_mimg=8 * 6 / 1e6)
    with pytest.raises(ValueError, match="discriminator.init is 'sg2ada-toy' but no converted checkpoint was given"):
        Trainer(exp, tmp_path / "x", root / "data.zip", root / "init.safetensors")
    t = Trainer(exp, tmp_path / "a", root / "data.zip", root / "init.safetensors", d_init_path=ckpt)
    start = {k: v.clone() for k, v in t.D.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in src.state_dict().items() if not k.startswith(("mapping.", "b4.out.")))
    assert t.run(tmp_path / "a" / "model.safetensors", [1]) == 0
    assert not torch.equal(t.D.b16.conv0.weight, start["b16.conv0.weight"])          # D trains from the checkpoint
    summary = json.loads((tmp_path / "a" / "train.json").read_text())["discriminator_init"]
    assert summary["checkpoint"] == "sg2ada-toy" and summary["reinitialised"] == ["b4.out.bias", "b4.out.weight"]
    assert summary["source"]["source_init_kwargs"]["architecture"] == "orig"
    args = (root / "data.zip", root / "init.safetensors")
    Trainer(exp, tmp_path / "b", *args, d_init_path=ckpt).run(tmp_path / "b" / "model.safetensors", [1], stop_after_iters=3)
    Trainer(exp, tmp_path / "b", *args, d_init_path=ckpt).run(tmp_path / "b" / "model.safetensors", [1])
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")


def test_ada_run_adapts_p_and_resumes_bitwise(toy, tmp_path):
    """Table 1 rows: StyleGAN2 discriminator behind ADA; p moves with the real-logit signs and survives a resume."""
    root, exp = toy
    exp = dict(exp, discriminator=dict(exp["discriminator"], type="stylegan2", channel_max=32, ada_target=-1.0, ada_kimg=0.05),
               r1_gamma=0.01)
    _run(root, exp, tmp_path / "a")
    stats = [json.loads(l) for l in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    ps = [s["ada_p"] for s in stats]
    assert len(set(ps)) > 1 and max(ps) > 0          # updated every 4 iterations
    _run(root, exp, tmp_path / "b", stop_after=6)
    _run(root, exp, tmp_path / "b")
    if torch.cuda.is_available():  # CUDA's grid_sample backward accumulates with atomics: bitwise only on CPU
        return
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")


@pytest.mark.slow
def test_compiled_training_matches_eager(toy, tmp_path):
    """torch.compile of G and of D's frozen projections and trainable heads (R1 eager) computes the eager iteration: from the same state,
    the statistics and the G- and D-step gradients agree to 1e-4 relative on CPU (mode default), 2e-2 on CUDA (bf16
    autocast of G and D; mode reduce-overhead: CUDA graphs; run by benchmarks/gpu_check.sh), and the compiled run goes through
    R1. Whole trajectories are not compared: Adam turns rounding differences of near-zero gradients into full-size
    updates (lr x sign), so two correct implementations drift apart within a few iterations."""
    root, exp = toy
    torch.set_num_threads(1)
    mode, rtol = ("reduce-overhead", 2e-2) if torch.cuda.is_available() else ("default", 1e-4)
    exp = dict(exp, d_precision="bf16")                    # on CUDA: bf16 D, frozen projection weights stored bf16
    eager = Trainer(exp, tmp_path / "off", root / "data.zip", root / "init.safetensors")
    comp = Trainer(dict(exp, compile=mode), tmp_path / "on", root / "data.zip", root / "init.safetensors")
    assert eager.G_fast is eager.G and not eager.D._compiled and comp.G_fast is not comp.G and comp.D._compiled
    stats = [comp.step() for _ in range(5)]                 # iterations 0-4, R1 at 4 (r1_interval 4)
    assert "loss_r1" in stats[4] and all(torch.isfinite(v) for s in stats for v in s.values())
    for _ in range(5):
        eager.step()
    comp.load_state_dict(eager.state_dict())                # iteration 5 (no R1) from the same state
    assert list(comp.state_dict()["D"]) == list(eager.state_dict()["D"])
    a, b = ({k: float(v) for k, v in t.step().items()} for t in (eager, comp))
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rtol * abs(a[k]) + 1e-7 for k in a), {k: (a[k], b[k]) for k in a}
    # the G step's gradients (same state); the D step's (its fakes come from G after an Adam step: 10x looser)
    for ta, tb, tol in ((eager.G, comp.G, rtol), (eager.D, comp.D, 10 * rtol)):
        ga = torch.cat([p.grad.flatten() for p in ta.parameters() if p.grad is not None])
        gb = torch.cat([p.grad.flatten() for p in tb.parameters() if p.grad is not None])
        assert ga.shape == gb.shape and (ga - gb).norm() <= tol * ga.norm(), float((ga - gb).norm() / ga.norm())


def test_training_state_leaves_out_the_frozen_projections(toy, tmp_path):
    """The frozen projections are rebuilt on every start, never saved; older states that hold them still load; a
    discriminator state of another architecture is refused with the file named."""
    root, exp = toy
    t = Trainer(exp, tmp_path / "s", root / "data.zip", root / "init.safetensors")
    t.step()
    state = t.state_dict()
    assert state["D"] and not any(k.startswith("projections.") for k in state["D"])
    old = dict(state, D={**state["D"], **{k: v for k, v in t.D.state_dict().items() if k.startswith("projections.")}})
    fresh = Trainer(exp, tmp_path / "s", root / "data.zip", root / "init.safetensors")
    fresh.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(fresh.D.state_dict().values(), t.D.state_dict().values()))
    broken = dict(state, D=dict(state["D"]))
    broken["D"].pop(next(k for k in state["D"] if k.startswith("discriminators.")))
    with pytest.raises(RuntimeError, match="training-state.pt: discriminator state"):
        fresh.load_state_dict(broken)
