"""The resumable state of a training run, bound to its identity (d2o.identity).

    results/<experiment>/runs/<run identity>/
        identity.json         the settings and input hashes the run was started with
        training-state.pt     networks, optimisers, counters (written atomically)
        progress.json         iteration and images of that state (read without loading the state)
        finished.json         written when the run wrote its model
        stats.jsonl           one record per log interval (records of iterations a resume recomputes are dropped)
        train.log             the log of every start of this run, appended (Snakemake's job log is rewritten)
        snapshots/            EMA snapshots
    results/<experiment>/runs/.trainer.lock   held by the running trainer: a second one refuses at once

The lock is an OS file lock (flock): it holds across the processes of one machine and on shared filesystems that
implement flock across clients (Lustre, GPFS, NFSv4 with locking); on a filesystem without it a second trainer on
another node is not detected. A trainer orphaned by a killed Snakemake keeps the lock until it exits.

A run is resumed only from the directory of its own identity; directories of other identities (other settings or
inputs) are kept and named in the log with the keys that differ. A finished run asked to train again (the outputs
were deleted, e.g. by `--forcerun train`) is kept aside as `<identity>.previous-<time>` and trained from scratch,
unless its duration grew (then it continues: the loop does not depend on the duration). A state past the end of a
shortened run is kept aside the same way.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from d2o.identity import differences
from d2o.io import atomic_path, atomic_write_json

STATE_FILE = "training-state.pt"
IDENTITY_FILE = "identity.json"
PROGRESS_FILE = "progress.json"
FINISHED_FILE = "finished.json"
LEGACY_RUN_DIR = "run"  # <results>/<experiment>/run: states from before run identities (never resumed)

log = logging.getLogger("d2o.train")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunDirectory:
    """The state directory of one run identity under `root` (= results/<experiment>/runs)."""

    def __init__(self, root: str | os.PathLike, identity: dict, total_img: int):
        self.root, self.identity, self.total_img = Path(root), identity, total_img
        self.path = self.root / identity["run"]
        self.state_file = self.path / STATE_FILE
        self.stats_file = self.path / "stats.jsonl"
        self.snapshot_dir = self.path / "snapshots"

    def acquire(self) -> None:
        """Take the experiment's trainer lock, or raise naming the trainer that holds it (host, pid, SLURM job)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".trainer.lock"
        self._lock = open(path, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "unknown"
            self._lock.close()
            raise RuntimeError(f"{path}: another trainer is running on this experiment ({holder}); wait for it or stop "
                               f"it (kill the pid / scancel the job) before starting this one") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"host {platform.node()}, pid {os.getpid()}, SLURM job {os.environ.get('SLURM_JOB_ID', '-')}, "
                         f"since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._lock.flush()

    def release(self) -> None:
        if getattr(self, "_log", None):
            logger, h = self._log
            logger.removeHandler(h)
            h.close()
            self._log = None
        lock = getattr(self, "_lock", None)
        if lock is not None and not lock.closed:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def attach_log(self, logger: logging.Logger) -> None:
        """Append `logger`'s records to <run>/train.log (once per process)."""
        path = str(self.path / "train.log")
        if not any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in logger.handlers):
            h = logging.FileHandler(path, mode="a")
            h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
            logger.addHandler(h)
            self._log = (logger, h)

    def open(self) -> bool:
        """Prepare the directory (rank 0 only): log the other runs, keep aside a finished or overshooting state,
        record the identity. Returns whether a state to resume from is there."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._report_others()
        if self.path.exists():
            progress = _read(self.path / PROGRESS_FILE) or {}
            finished = (self.path / FINISHED_FILE).exists()
            nimg = progress.get("nimg", 0)
            if self.state_file.exists() and nimg > self.total_img:
                self._keep_aside(f"its state is at {nimg / 1e6:.4f} Mimg, past this run's end "
                                 f"({self.total_img / 1e6:.4f} Mimg)")
            elif finished and nimg >= self.total_img:
                self._keep_aside("it finished and its outputs are asked for again (e.g. --forcerun train)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.snapshot_dir.mkdir(exist_ok=True)
        atomic_write_json(self.path / IDENTITY_FILE, self.identity)
        (self.path / FINISHED_FILE).unlink(missing_ok=True)
        return self.state_file.exists()

    def _report_others(self) -> None:
        for other in sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.path):
            ident = _read(other / IDENTITY_FILE)
            if ident is None or ".previous-" in other.name:
                continue
            diff = differences({"settings": ident.get("settings", {}), "inputs": ident.get("inputs", {})},
                               {"settings": self.identity["settings"], "inputs": self.identity["inputs"]})
            diff = [d for d in diff if not d.startswith("settings.duration_mimg")] or ["duration_mimg only"]
            log.info("%s: a run with other settings (%s%s); not resumed, kept", other, "; ".join(diff[:8]),
                     f"; {len(diff) - 8} more" if len(diff) > 8 else "")
        legacy = self.root.parent / LEGACY_RUN_DIR
        if (legacy / STATE_FILE).exists():
            log.info("%s: a training state from before run identities (settings unknown); not resumed, kept "
                     "(delete it to free the space)", legacy)

    def _keep_aside(self, why: str) -> None:
        dest = self.root / f"{self.path.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(self.path, dest)
        log.warning("%s: %s; kept as %s, training from scratch", self.path, why, dest)

    # ---- state
    def load(self, device) -> dict:
        return torch.load(self.state_file, map_location=device, weights_only=True)

    def save(self, state: dict) -> None:
        with atomic_path(self.state_file) as tmp:
            torch.save(state, tmp)
        atomic_write_json(self.path / PROGRESS_FILE, {"it": state["it"], "nimg": state["nimg"], "time": time.time()})

    def mark_finished(self, nimg: int) -> None:
        atomic_write_json(self.path / FINISHED_FILE, {"nimg": nimg, "model": self.identity["model"]})

    def trim_stats(self, it: int) -> None:
        """Drop stats records of iterations after `it` (a resumed run recomputes them: no duplicates)."""
        if self.stats_file.exists():
            keep = [line for line in self.stats_file.read_text().splitlines() if line and json.loads(line)["it"] <= it]
            with atomic_path(self.stats_file) as tmp:
                tmp.write_text("".join(line + "\n" for line in keep))

    def append_stats(self, record: dict) -> None:
        with open(self.stats_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def snapshot(self, kimg: int) -> Path:
        return self.snapshot_dir / f"snapshot-{kimg:06d}.safetensors"

    def copy_snapshots(self, dest_dir: str | os.PathLike, kimgs: list[int]) -> None:
        """Hard-link (or copy) the run's snapshots into the declared snapshot folder."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        for k in kimgs:
            src = self.snapshot(k)
            if not src.exists():
                raise FileNotFoundError(f"{src}: snapshot missing after training; delete {self.path} and retrain")
            link_or_copy(src, dest_dir / src.name)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Hard-link `src` to `dst` (a copy where the filesystem cannot link); an existing `dst` is kept."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
