"""D2O / D2O-F / CD / multi-step training: one resumable loop (paper §3-4, App C; spec §1-7).

`Trainer(name, training, execution, runs_dir, dataset_zip, init_path)` takes the typed settings of one experiment
(d2o.settings): every knob of a run is a field of `Training` (what it computes) or `Execution` (how it executes),
each with its one-line meaning there.

One iteration (spec §4): a G step, a D step on the same real minibatch with fresh z, and every `r1_interval`
iterations (index > 0) a lazy R1 step; then the EMA update. Losses come from d2o.gan_loss (authors' per-sample
sum by default), R1 from d2o.r1, freezing from d2o.freezing, EMA from d2o.ema, CD from d2o.cd.

Resume: every random draw of iteration k comes from generators seeded by (seed, rank, k) and the data order from
(seed, epoch), so the full state is just the networks, the optimisers and the counters. It lives in the run
directory of the run's identity (d2o.run_state, d2o.identity: the settings and the inputs' contents), so it is only
ever resumed into the settings it was made with. It is saved atomically every `state_minutes` and when
SIGTERM/SIGUSR1 arrives (SLURM's warning before a time limit); the process then exits with RESUME_EXIT_CODE so the
scheduler retries and the next attempt continues. A run killed at any point and restarted ends bitwise-identical to
an uninterrupted one (CPU, deterministic mode).

Multi-GPU (d2o.distributed): gradients of the trainable parameters are averaged across ranks. With `batch_gpu` below
batch / gpus, each rank runs several virtual GPUs (each its data slice, random streams and D buffers), so any GPU
count computes the same iteration: one accumulation round each, or, with `round_batch`, several per forward/backward
pass (D's heads keep their BatchNorm statistics apart), which launches proportionally fewer kernels per image.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import time
from pathlib import Path

import torch

from d2o import distributed, freezing, gan_loss
from d2o import ema as ema_lib
from d2o.data_order import EpochSampler, InfiniteSampler
from d2o.datasets import cached_image_array
from d2o.discriminators import build_discriminator
from d2o.edm import model_io
from d2o.generator import build_generator, generator_sigmas, run_generator
from d2o.identity import provenance, run_identity, snapshot_identity
from d2o.io import atomic_write_json
from d2o.r1 import lazy_adam_params, r1_penalty
from d2o.run_state import RunDirectory
from d2o.settings import Execution, Training, batch_split, to_dict
from d2o.weights import missing_weights_error, training_weights, weights_record

log = logging.getLogger("d2o.train")
RESUME_EXIT_CODE = 75  # EX_TEMPFAIL: state saved, run again to continue
# The projected D's frozen projections (feature networks, CCM, CSM) are rebuilt identically on every start (seeded, or
# pretrained weights) and may be stored in bf16 (`d_precision: bf16`): the training state leaves them out.
FROZEN_D_PREFIX = "projections."


class Trainer:
    """One training run: `Trainer(name, exp.training, exp.execution, runs_dir, dataset_zip, init_path).run(output)`."""

    def __init__(self, name: str, training: Training, execution: Execution, runs_dir: str | Path,
                 dataset_zip: str | Path, init_path: str | Path, d_init_path: str | Path | None = None,
                 weights: dict[str, str | Path] | None = None):
        self.name, t, x = name, training, execution
        self.t, self.x = t, x
        self.rank, self.world, self.device = distributed.init()
        projected = t.discriminator is None or t.discriminator.type == "projected"
        self.batch_gpu, self.virtual, self.group, self.rounds = batch_split(
            t.batch, self.world, t.batch_gpu, x.round_batch, projected, f"experiments.{name}", "GPUs of this run")
        if x.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        tf32 = t.d_precision == "tf32"  # the authors disable TF32; `tf32` enables it wherever fp32 runs
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not x.deterministic

        d = t.discriminator if t.uses_gan else None
        if d is not None and d.init and d_init_path is None:
            raise ValueError(f"experiment {name}: discriminator.init is {d.init!r} but no converted checkpoint was "
                             f"given (train.py --d-init <results>/checkpoints/{d.init}.safetensors)")
        # the registry weights this run reads (d2o.weights): pretrained networks of D and LPIPS, the class embedding
        # D's conditional heads start from (offline runs: random networks and embedding, no weights)
        weights = {k: str(v) for k, v in (weights or {}).items()}
        needed = training_weights(t)
        missing, unused = [n for n in needed if n not in weights], sorted(set(weights) - set(needed))
        if missing:
            raise missing_weights_error(missing[0], f"experiment {name}")
        if unused:
            raise ValueError(f"experiment {name}: weights {unused} given but not read by this run (it reads {list(needed)})")
        self.weights = weights
        embed = d.class_embedding if d is not None and d.class_embedding in weights else None
        self.identity = run_identity(t, {"dataset": dataset_zip, "init": init_path,
                                         "discriminator_init": d_init_path if d is not None and d.init else None,
                                         **{f"weights:{k}": v for k, v in weights.items()}})
        self.class_embedding = ({"weights": embed, "sha256": self.identity["inputs"][f"weights:{embed}"]} if embed else
                                "random (offline registry)" if d is not None and d.class_embedding and t.label_dim else
                                "random" if t.label_dim and d is not None else None)
        self.run_dir = RunDirectory(runs_dir, self.identity, t.total_img)

        # uint8 NHWC, decoded once per dataset version into <dataset folder>/.cache and memory-mapped
        self.images, labels = cached_image_array(dataset_zip, Path(dataset_zip).parent / ".cache")
        self.labels = torch.from_numpy(labels) if labels is not None else None
        if t.dataset_images is not None and len(self.images) != t.dataset_images:
            raise ValueError(f"{dataset_zip}: {len(self.images):,} images, datasets.{t.dataset}.expected says "
                             f"{t.dataset_images:,}: the zip was built from an incomplete source; complete it and rebuild "
                             f"the zip (snakemake {dataset_zip})")
        self.label_dim = t.label_dim
        if self.label_dim and self.labels is None:
            raise ValueError(f"{dataset_zip}: experiment {name} is conditional but the dataset has no labels")
        sampler = InfiniteSampler if t.data_order == "authors" else EpochSampler
        self.sampler = sampler(len(self.images), t.seed, replicas=t.batch // self.batch_gpu)

        # a fresh-init run reads only the network header (built before the seed, so the generator's init is the same)
        init = model_io.build_fresh(init_path) if t.fresh_init else model_io.load_network(init_path)
        torch.manual_seed(t.seed)  # the fresh initialisation of `init_weights: random` runs
        self.G = build_generator(init, self.label_dim, t.init_weights, use_fp16=t.precision == "bf16").to(self.device).train()
        self.frozen = freezing.freeze(self.G.model, t.freeze, authors_rule=t.freeze_rule == "authors")
        self.shares = freezing.group_shares(self.G.model)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.sigmas = generator_sigmas(t.generator_steps, t.middle_sigma)

        self.use_gan, self.use_cd = t.uses_gan, t.uses_cd
        self.d_init = None  # where a pre-trained discriminator came from (train.json)
        self.per_gpu_projections = False
        self.augment = self.ada = None
        res = self.images.shape[1]
        if self.use_gan:
            dcfg = {"type": d.type, **d.build_kwargs()}
            if d.init:  # a GAN-pretrained discriminator (Table 1), converted by the DAG (rule convert_checkpoint)
                dcfg["checkpoint"] = str(d_init_path)
            if embed:
                dcfg["embed_weights"] = weights[embed]
            if d.type == "projected":
                dcfg["weights"] = {b: weights[b] for b in d.backbones if b in weights}
            elif d.type in ("vgg16", "lpips") and "vgg16" in weights:
                dcfg["weights"] = weights["vgg16"]
            if d.type == "projected" and d.projections == "per_gpu":  # each virtual GPU its random projection (as coded)
                dcfg["projection_seeds"] = [distributed.seeded(t.seed, 4, v).initial_seed()
                                            for v in range(self.rank * self.virtual, (self.rank + 1) * self.virtual)]
            torch.manual_seed(t.seed)  # the heads (and a shared projection): identical on every rank and every resume
            self.D = build_discriminator(dcfg, res, self.label_dim, pretrained=not t.offline).to(self.device).train()
            self.per_gpu_projections = "projection_seeds" in dcfg
            if d.init:
                self.d_init = {"checkpoint": d.init, "source": getattr(self.D, "d2o_extra", {}),
                               "reinitialised": getattr(self.D, "reinitialised", [])}
            if self.group > 1:  # several virtual GPUs per pass: their D batch statistics are kept apart
                self.D.set_batchnorm_group(self.batch_gpu)
            d_params = self.D.trainable_parameters() if hasattr(self.D, "trainable_parameters") else [p for p in self.D.parameters() if p.requires_grad]
            self.d_params = list(d_params)
            lr_d, betas_d = t.lr_d, (0.0, 0.99)
            if t.r1_gamma or t.lazy_adam == "always":  # the authors correct D's Adam whether or not R1 runs
                lr_d, betas_d = lazy_adam_params(lr_d, betas_d, t.r1_interval)
            self.opt_D = torch.optim.Adam(self.d_params, lr=lr_d, betas=betas_d, eps=1e-8, **self._fused())
            if d.ada_target is not None:  # Table 1 rows: ADA on reals and fakes (d2o.ada)
                from d2o.ada import AdaController, AugmentPipe
                self.augment = AugmentPipe(p=0.0).to(self.device)
                self.ada = AdaController(self.augment, target=d.ada_target, ada_kimg=d.ada_kimg)
        if self.use_cd:  # the teacher is the init checkpoint's network, frozen (spec §6.1)
            from d2o.cd import build_lpips
            self.teacher = init.to(self.device).eval().requires_grad_(False)
            self.lpips = build_lpips(t.offline, weights.get("vgg16")).to(self.device)
        if self.device.type == "cuda":  # NHWC convolutions (cuDNN's fast path); CPU keeps NCHW
            for m in (self.G, self.G_ema) + ((self.D,) if self.use_gan else ()):
                m.to(memory_format=torch.channels_last)
        if self.use_gan and self.device.type == "cuda" and t.d_precision == "bf16" and hasattr(self.D, "cast_projection_weights"):
            self.D.cast_projection_weights(torch.bfloat16)  # frozen weights cast once, not by autocast on every call
        # torch.compile (`compile`): the generator, and the frozen projections and trainable heads of a projected D;
        # R1 stays eager (no double backward through compiled graphs), as do the EMA copy, the CD teacher and LPIPS
        self.G_fast = self.G
        if x.compile != "off":
            self.G_fast = torch.compile(self.G, mode=x.compile)
            if self.use_gan and hasattr(self.D, "compile_networks"):
                self.D.compile_networks(mode=x.compile)
        self.g_params = [p for p in self.G.parameters() if p.requires_grad]
        self.opt_G = torch.optim.Adam(self.g_params, lr=t.lr_g, betas=(0.0, 0.99), eps=1e-8, **self._fused())
        self.it, self.nimg = 0, 0
        self.total_img = t.total_img
        self._stop_signal = None
        self.resumed_at: list[dict] = []  # (iteration, images) of every start of this run (train.json)

    def _fused(self) -> dict:
        return {"fused": True} if self.device.type == "cuda" else {}

    # ---- state
    def state_dict(self) -> dict:
        s = {"it": self.it, "nimg": self.nimg, "run_identity": self.identity["run"], "G": self.G.state_dict(),
             "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict()}
        if self.use_gan:
            s.update(D={k: v for k, v in self.D.state_dict().items() if not k.startswith(FROZEN_D_PREFIX)},
                     opt_D=self.opt_D.state_dict())
            if self.ada is not None:
                s["ada"] = self.ada.state_dict()
        return s

    def load_state_dict(self, s: dict) -> None:
        if s.get("run_identity", self.identity["run"]) != self.identity["run"]:
            raise RuntimeError(f"{self.run_dir.state_file}: a state of run {s['run_identity']}, not of this run "
                               f"({self.identity['run']}); it was moved into this directory by hand: move it back")
        self.it, self.nimg = s["it"], s["nimg"]
        self.G.load_state_dict(s["G"])
        self.G_ema.load_state_dict(s["G_ema"])
        self.opt_G.load_state_dict(s["opt_G"])
        if self.use_gan:
            state = {k: v for k, v in s["D"].items() if not k.startswith(FROZEN_D_PREFIX)}  # states before Nov 2026 had them
            missing, unexpected = self.D.load_state_dict(state, strict=False)
            if unexpected or any(not k.startswith(FROZEN_D_PREFIX) for k in missing):
                raise RuntimeError(f"{self.run_dir.state_file}: discriminator state does not match the experiment's "
                                   f"(missing {missing[:3]}, unexpected {unexpected[:3]}); delete the run folder to restart")
            self.opt_D.load_state_dict(s["opt_D"])
            if self.ada is not None:
                self.ada.load_state_dict(s["ada"])

    def save_state(self) -> None:
        if self.rank == 0:
            self.run_dir.save(self.state_dict())
        distributed.barrier(self.world)

    def open_run(self) -> None:
        """Bind to the run directory of this run's identity and resume its state, if any (d2o.run_state)."""
        if self.rank == 0:
            resumable = self.run_dir.open()
            self.run_dir.attach_log(logging.getLogger("d2o"))  # runs/<identity>/train.log: every start, appended
        distributed.barrier(self.world)
        if self.run_dir.state_file.exists() and (self.rank != 0 or resumable):
            self.load_state_dict(self.run_dir.load(self.device))
            if self.rank == 0:
                self.run_dir.trim_stats(self.it)
        self.resumed_at.append({"it": self.it, "nimg": self.nimg, "time": time.time()})
        t = self.t
        log.info("run %s (model %s) %s at iteration %d (%.4f of %.4f Mimg); %s", self.run_dir.path,
                 self.identity["model"], "resumed" if self.it else "started", self.it, self.nimg / 1e6,
                 t.duration_mimg, ", ".join(f"{k}={v}" for k, v in to_dict(t).items() if not isinstance(v, dict)))

    # ---- one iteration
    def _batch(self, global_idx: torch.Tensor, v: int):
        """The slice of this iteration's global batch of the virtual ranks v, ..., v + group - 1 (one round), on the
        device, in [-1, 1]."""
        idx = global_idx[v * self.batch_gpu:(v + self.group) * self.batch_gpu]
        x = torch.from_numpy(self.images[idx.numpy()]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        # NHWC storage is channels_last already (cuDNN's fast path); CPU convolutions get NCHW
        x = x.contiguous(memory_format=torch.channels_last if self.device.type == "cuda" else torch.contiguous_format)
        c = None
        if self.label_dim:
            c = torch.nn.functional.one_hot(self.labels[idx], self.label_dim).float().to(self.device)
        return x, c

    def _noise(self, gens: list[torch.Generator], shape) -> torch.Tensor:
        """One round's N(0, 1) draws of `shape` per sample: batch_gpu rows from each virtual rank's stream."""
        return _cat([torch.randn((self.batch_gpu, *shape), generator=g) for g in gens]).to(self.device)

    def _fake_labels(self, gens: list[torch.Generator], c_real):
        """Classes of a round's fakes: the real minibatch's (`fake_labels: real`, as coded) or independent draws."""
        if not self.label_dim or self.t.fake_labels == "real":
            return c_real
        idx = _cat([torch.randint(len(self.labels), (self.batch_gpu,), generator=g) for g in gens])
        return torch.nn.functional.one_hot(self.labels[idx], self.label_dim).float().to(self.device)

    def _autocast(self, precision: str):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and precision == "bf16")

    def _generate(self, z, c):
        """G(z, c): bf16 as the authors cast it (the generator's own use_fp16 path), bf16 autocast, or fp32."""
        with self._autocast("bf16" if self.t.precision == "bf16-autocast" else "fp32"):
            return run_generator(self.G_fast, z, c, self.sigmas).float()

    def _augment(self, x, g_augs):
        """ADA's augmentation (when on) of one round: each virtual rank's samples from its own stream."""
        if self.augment is None:
            return x
        return _cat([self.augment(xv, generator=g) for xv, g in zip(x.split(self.batch_gpu), g_augs)])

    def _D(self, x, c, g_augs):
        """The discriminator, behind ADA's augmentation when it is on (reals, fakes and R1 alike, as StyleGAN2-ADA)."""
        x = self._augment(x, g_augs)
        with self._autocast(self.t.d_precision):
            return self.D(x, c)

    def _D_pair(self, a, ca, b, cb, g_augs):
        """`_D(a, ca), _D(b, cb)` in that order, with the projected D's shared projection pass (`forward_pair`)."""
        if not hasattr(self.D, "forward_pair"):
            return self._D(a, ca, g_augs), self._D(b, cb, g_augs)
        a, b = self._augment(a, g_augs), self._augment(b, g_augs)
        with self._autocast(self.t.d_precision):
            return self.D.forward_pair(a, ca, b, cb)

    def _per_gpu(self, loss: torch.Tensor) -> torch.Tensor:
        """A round's GAN loss as the mean over its virtual GPUs: the authors' per-sample sum grows with the samples of
        the pass, so it is divided by the virtual GPUs in it; batch means (`mean`, R1, CD) already are that mean."""
        return loss / self.group if self.group > 1 and self.t.loss.aggregation == "sample_sum" else loss

    def _eager_D(self):
        return self.D.eager() if hasattr(self.D, "eager") else contextlib.nullcontext()

    def _global_rng_state(self) -> tuple:
        return torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)

    def _rounds(self, rng_states: list):
        """Yield the accumulation rounds r (a no-op for one round): round r's global RNG state is swapped in, and D's
        buffers (BatchNorm statistics, spectral-norm vectors) start every round from their value at the start of the
        phase, as on separate GPUs; round 0's values (virtual rank 0's) are kept afterwards. With per-GPU projections
        the round's virtual GPUs use their own projection copies."""
        if self.rounds == 1:
            self._use_round_projections(0)
            yield 0
            return
        # buffers of D's training-mode modules (the frozen projections are in eval mode: theirs never change)
        bufs = [b for m in self.D.modules() if m.training for b in m.buffers(recurse=False)] if self.use_gan else []
        start = [b.clone() for b in bufs]
        for r, (cpu_state, cuda_state) in enumerate(rng_states):
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, self.device)
            if r > 0:
                for b, b0 in zip(bufs, start):
                    b.copy_(b0)
            self._use_round_projections(r)
            yield r
            rng_states[r] = self._global_rng_state()
            if r == 0:
                kept = [b.clone() for b in bufs]
        for b, b0 in zip(bufs, kept):
            b.copy_(b0)

    def _use_round_projections(self, r: int) -> None:
        if self.use_gan and self.per_gpu_projections:
            self.D.use_projections(range(r * self.group, (r + 1) * self.group))

    def step(self) -> dict[str, torch.Tensor]:
        """One iteration; returns its statistics as detached 0-dim tensors (no host sync: read them when logging).

        Rank k runs `virtual` virtual ranks v = k * virtual + i, each with its batch_gpu slice of the global batch, its
        own random streams (seeded by v) and its own D BatchNorm statistics, in `rounds` passes of `group` virtual
        ranks each, and accumulates loss / rounds: gradients (after the all-reduce mean over ranks) equal those of a
        run on world * virtual GPUs with one round each. With group > 1 the draws made inside D and the losses
        (DiffAugment, CD's noise levels) come from the stream of the pass's first virtual rank."""
        t, stats, R, K = self.t, {}, self.rounds, self.group
        if self.x.compile in ("reduce-overhead", "max-autotune"):
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: last iteration's graph outputs may be reused
        vs = [self.rank * self.virtual + i for i in range(self.virtual)]
        gens = [distributed.seeded(t.seed, 2, v, self.it) for v in vs]
        g_augs = [distributed.seeded(t.seed, 3, v, self.it, device=self.device) for v in vs]
        seeds = [int(torch.randint(2**62, (1,), generator=g)) for g in gens]
        rng_states = []
        for r in range(R):  # DiffAugment and any other global draw: one stream per round
            torch.manual_seed(seeds[r * K])
            if R > 1:
                rng_states.append(self._global_rng_state())
        gens, g_augs = [gens[r * K:(r + 1) * K] for r in range(R)], [g_augs[r * K:(r + 1) * K] for r in range(R)]
        global_idx = self.sampler.batch(self.it, t.batch)
        data = [self._batch(global_idx, vs[r * K]) for r in range(R)]  # each round's reals, for the G, D and R1 steps

        def log(key, value):  # per-round values, averaged over the rounds
            stats[key] = stats.get(key, 0) + value.detach() / R

        # G step
        self.opt_G.zero_grad(set_to_none=True)
        if self.use_gan:
            self.D.requires_grad_(False)
        for r in self._rounds(rng_states):
            x, c = data[r]
            z = self._noise(gens[r], x.shape[1:])
            cz = self._fake_labels(gens[r], c)
            loss_g = torch.zeros((), device=self.device)
            if self.use_gan:
                fake = self._generate(z, cz)
                loss_gan = self._per_gpu(gan_loss.generator_loss(self._D(fake, cz, g_augs[r]), t.loss.kind,
                                                                 t.loss.aggregation))
                loss_g = loss_g + loss_gan
                log("loss_G_gan", loss_gan)
            if self.use_cd:
                from d2o.cd import cd_loss
                z_cd = self._noise(gens[r], x.shape[1:])
                lc = cd_loss(self.G_fast, self.teacher, x, z_cd, c, self.lpips, gens[r][0], N=t.cd.N, rho=t.cd.rho,
                             i_min=t.cd.i_min, resolution=t.cd.lpips_resolution)
                loss_g = loss_g + t.cd.weight * lc
                log("loss_G_cd", lc)
            (loss_g / R).backward()
            log("loss_G", loss_g)
        distributed.reduce_grads(self.g_params, self.world)
        self.opt_G.step()

        if self.use_gan:
            # D step: fakes from the just-updated G, no grad
            for p in self.d_params:
                p.requires_grad_(True)
            self.opt_D.zero_grad(set_to_none=True)
            for r in self._rounds(rng_states):
                x, c = data[r]
                z2 = self._noise(gens[r], x.shape[1:])
                c2 = self._fake_labels(gens[r], c)
                with torch.no_grad():
                    fake = self._generate(z2, c2)
                lf_, lr_ = self._D_pair(fake, c2, x, c, g_augs[r])  # fakes first, then reals, as the authors' D step
                loss_d = self._per_gpu(gan_loss.discriminator_loss(lr_, lf_, t.loss.kind, t.loss.aggregation))
                (loss_d / R).backward()
                log("loss_D", loss_d)
                log("logits_real", _mean_logit(lr_))
                log("logits_fake", _mean_logit(lf_))
                if self.ada is not None:
                    self.ada.accumulate(lr_)
            distributed.reduce_grads(self.d_params, self.world)
            self.opt_D.step()
            if self.ada is not None:
                stats["ada_p"] = torch.tensor(self.ada.step(t.batch))

            if t.r1_gamma and self.it > 0 and self.it % t.r1_interval == 0:
                self.opt_D.zero_grad(set_to_none=True)
                for r in self._rounds(rng_states):
                    x, c = data[r]
                    with self._eager_D():
                        loss_r1, sq = r1_penalty(lambda img, cc: self._D(img, cc, g_augs[r]), x, c, t.r1_gamma,
                                                 t.r1_interval)
                    (loss_r1 / R).backward()
                    log("loss_r1", loss_r1)
                    log("r1_grad_sq", sq.mean())
                distributed.reduce_grads(self.d_params, self.world)
                self.opt_D.step()

        beta = ema_lib.ema_beta(t.batch, self.nimg, t.ema_halflife_mimg * 1e6, t.ema_rampup)
        ema_lib.update_ema(self.G_ema, self.G, beta)
        self.nimg += t.batch
        self.it += 1
        return stats

    # ---- the loop
    def _on_signal(self, signum, frame):
        self._stop_signal = signum
        log.warning("signal %d: saving state at the end of this iteration", signum)

    def run(self, output: str | Path, stop_after_iters: int | None = None) -> int:
        """Train to the end (or to `stop_after_iters`, for tests); returns 0 when done or RESUME_EXIT_CODE."""
        if self.rank == 0:
            self.run_dir.acquire()  # one trainer per experiment's runs (refuses at once, naming the holder)
        try:
            return self._run(output, stop_after_iters)
        finally:
            if self.rank == 0:
                self.run_dir.release()

    def _run(self, output, stop_after_iters) -> int:
        x = self.x
        self.open_run()
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # SLURM's warning, a kill, Ctrl-C: save, exit 75
            with contextlib.suppress(ValueError):  # not in the main thread (tests)
                signal.signal(sig, self._on_signal)
        pending = [k for k in self.t.snapshot_kimgs() if k * 1000 > self.nimg]
        end_time = distributed.slurm_end_time()
        if end_time is not None:
            log.info("SLURM job ends at %s: saving state and stopping %d s before", time.ctime(end_time), x.stop_margin_s)
        t_start, img_start, last_state, last_log = time.time(), self.nimg, time.time(), self.nimg
        # the first save within a minute (short runs are resumable too), then every state_minutes
        save_every = min(x.state_minutes * 60, 60.0)
        log_every = x.log_every_kimg * 1000
        acc: dict[str, list[torch.Tensor]] = {}
        while self.nimg < self.total_img:
            for k, v in self.step().items():
                acc.setdefault(k, []).append(v)
            while pending and self.nimg >= pending[0] * 1000:
                self._save_snapshot(self.run_dir.snapshot(pending.pop(0)))
            if self.nimg - last_log >= log_every or self.nimg >= self.total_img:
                rate = (self.nimg - img_start) / max(time.time() - t_start, 1e-9)
                rec = {"it": self.it, "kimg": self.nimg / 1e3, "img_per_s": rate,
                       "eta_s": (self.total_img - self.nimg) / max(rate, 1e-9),
                       **{k: float(torch.stack(v).float().mean()) for k, v in acc.items()}}
                acc.clear()
                last_log = self.nimg
                if self.rank == 0:
                    self.run_dir.append_stats(rec)
                    log.info("kimg %.1f  %.1f img/s  ETA %.0f s  %s", rec["kimg"], rate, rec["eta_s"],
                             " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k.startswith(("loss", "logits"))))
            if self._stop_signal is not None or (end_time is not None and time.time() > end_time - x.stop_margin_s):
                log.warning("stopping at iteration %d before the time limit; rerun (or let the scheduler retry) to resume", self.it)
                self.save_state()
                return RESUME_EXIT_CODE
            if time.time() - last_state > save_every:
                self.save_state()
                last_state, save_every = time.time(), x.state_minutes * 60
            if stop_after_iters is not None and self.it >= stop_after_iters:
                self.save_state()
                return RESUME_EXIT_CODE
        self.save_state()
        if self.rank == 0:
            self.write_outputs(output)
            self.run_dir.mark_finished(self.nimg)
            if not x.keep_state:  # nothing to continue from: a longer duration retrains
                self.run_dir.state_file.unlink(missing_ok=True)
        return 0

    def _save_snapshot(self, path: Path) -> None:
        if self.rank == 0 and not path.exists():
            model_io.save_model(self.G_ema, path, extra={"experiment": self.name, "nimg": self.nimg,
                                                         "run_identity": self.identity["run"],
                                                         "model_identity": snapshot_identity(self.identity["run"], self.nimg)})

    def write_outputs(self, output: str | Path) -> None:
        """The EMA generator and train.json: what was trained, under which identity, by which code on what."""
        output = Path(output)
        t = self.t
        model_io.save_model(self.G_ema, output, extra={"experiment": self.name, "nimg": self.nimg,
                                                        "model_identity": self.identity["model"],
                                                        "offline": t.offline})
        summary = {"experiment": self.name, "model_identity": self.identity["model"],
                   "run_identity": self.identity["run"], "run_dir": str(self.run_dir.path),
                   "images": self.nimg, "iterations": self.it, "training_mimg": self.nimg / 1e6,
                   "params_m": self.shares["total_params"] / 1e6, "shares": self.shares,
                   "freeze": {"groups": list(t.freeze), "rule": t.freeze_rule, "tensors": len(self.frozen),
                              "params": self.shares["total_params"] - self.shares["trainable_params"],
                              "percent": 100.0 - self.shares["trainable_percent"]},
                   "sigmas": list(self.sigmas), "offline": t.offline, "world_size": self.world,
                   "virtual_gpus": self.world * self.virtual, "discriminator_init": self.d_init, "class_embedding": self.class_embedding,
                   "weights": weights_record(self.weights.values()), "inputs": self.identity["inputs"], "starts": self.resumed_at,
                   "settings": {"training": to_dict(t), "execution": to_dict(self.x)},
                   "provenance": provenance(self.device, self.world)}
        atomic_write_json(output.with_name("train.json"), summary)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _mean_logit(logits) -> torch.Tensor:
    flat = [t.detach().float().mean() for group in logits for t in group]
    return torch.stack(flat).mean()
