"""Run and model identities: what a trained model is bound to, and the provenance recorded with every result.

A training run's identity is a hash over its `d2o.settings.Training` (every knob that changes what training
computes) and the SHA-256 of the files it reads (dataset zip, init checkpoint, pre-trained discriminator):

- `run`: all of it but `duration_mimg`. It names the run directory `results/<experiment>/runs/<run>/`, so a state
  is only ever resumed into the settings it was made with. The duration only says where a run stops: a run of
  the same identity and a longer duration continues from the state (the loop does not depend on the duration).
- `model`: all of it, duration included: the identity of the model a finished run writes.

Provenance (`provenance`) records the code version (git commit and dirty flag), the library versions and the
hardware beside every result, so a number in a table can be traced to what made it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
from pathlib import Path

from d2o.download import sha256_file
from d2o.settings import Training, digest, to_dict

ID_CHARS = 16  # hex digits of an identity


def content_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, cached beside it in `.<name>.sha256` (keyed by size and mtime: a large dataset
    zip is hashed once, not at every start); concurrent callers wait for one to hash."""
    path = Path(path)
    st = path.stat()
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = path.with_name(f".{path.name}.sha256")
    try:
        lock = open(cache, "a+")
    except OSError:  # read-only folder: hash without the cache
        return sha256_file(path)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        with contextlib.suppress(ValueError):
            cached = json.loads(lock.read() or "{}")
            if {k: cached.get(k) for k in key} == key and cached.get("sha256"):
                return cached["sha256"]
        value = sha256_file(path)
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps({**key, "sha256": value}))
        return value


def run_identity(training: Training, inputs: dict[str, str | os.PathLike | None]) -> dict:
    """{"run", "model", "settings", "inputs"}: the identities of a run (duration excluded) and of the model it makes,
    from the training settings and the content of its input files (`inputs`: role -> path; None entries dropped)."""
    settings = to_dict(training)
    hashes = {role: content_sha256(p) for role, p in sorted(inputs.items()) if p is not None}
    run_settings = {k: v for k, v in settings.items() if k != "duration_mimg"}
    return {"run": digest({"settings": run_settings, "inputs": hashes})[:ID_CHARS],
            "model": digest({"settings": settings, "inputs": hashes})[:ID_CHARS],
            "settings": settings, "inputs": hashes}


def snapshot_identity(run: str, nimg: int) -> str:
    """The identity of a run's EMA snapshot after `nimg` images."""
    return digest({"run": run, "nimg": nimg})[:ID_CHARS]


def model_identity(path: str | os.PathLike) -> str:
    """The identity of a network file: a trained model's `model_identity` (its header), else (a converted checkpoint)
    a hash of the source file's SHA-256 the conversion recorded, else of the file's own content."""
    from d2o.edm.model_io import read_header

    extra = read_header(path).get("extra", {})
    if extra.get("model_identity"):
        return extra["model_identity"]
    return digest({"checkpoint": extra.get("sha256") or content_sha256(path)})[:ID_CHARS]


def samples_identity(model_id: str, sampling) -> str:
    """The identity of a sample set: the network's identity and how the images were drawn from it."""
    return digest({"model": model_id, "sampling": to_dict(sampling)})[:ID_CHARS]


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two nested dicts (sorted by key)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, key = old.get(k, "<unset>"), new.get(k, "<unset>"), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, key + ".")
        elif a != b:
            out.append(f"{key}: {a} -> {b}")
    return out


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict:
    """{"commit", "dirty"} of the checkout the d2o package runs from (None outside a git checkout, e.g. an
    installed wheel; D2O_COMMIT overrides, for runs from an exported tree)."""
    if os.environ.get("D2O_COMMIT"):
        return {"commit": os.environ["D2O_COMMIT"], "dirty": None}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _version(module: str) -> str | None:
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(module)
    return None


def hardware(device=None) -> dict:
    """The device a result was computed on: GPU model and count, or the CPU."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(torch.device(device)),
                "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {"device": "cpu", "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def provenance(device=None, world_size: int = 1) -> dict:
    """Code version, library versions and hardware: recorded in train.json, every metric JSON and the scorecard."""
    versions = {m: _version(m) for m in ("d2o", "torch", "torchvision", "timm", "torch-fidelity", "lpips", "numpy")}
    return {"code": code_version(), "versions": versions, "python": platform.python_version(),
            "hardware": {**hardware(device), "world_size": world_size}, "host": platform.node()}
