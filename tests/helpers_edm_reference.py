"""Shared helpers for the EDM equivalence tests: fixture loading and the deterministic weights of make_reference.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

import d2o.edm.networks as nets

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "edm_reference"


def load_maker():
    """The fixture script as a module (CONFIGS, SAMPLER_RUNS, deterministic_init, forward_inputs); EDM is not imported."""
    spec = importlib.util.spec_from_file_location("edm_reference_maker", FIXTURE_DIR / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_fixture(name):
    path = FIXTURE_DIR / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate with: python tests/fixtures/edm_reference/"
                                f"make_reference.py --edm <NVlabs/edm checkout> (see {FIXTURE_DIR}/README.md)")
    return dict(np.load(path))


def build_net(name, maker):
    """Our network for fixture `name`, with the fixture's deterministic weights, float32, eval mode."""
    cls_name, kwargs = maker.CONFIGS[name]
    fx = load_fixture(name)
    cfg = json.loads(str(fx["config"]))
    assert cfg == dict(class_name=cls_name, kwargs=kwargs), f"{name}: CONFIGS changed since the fixture was made"
    net = getattr(nets, cls_name)(**kwargs)
    maker.deterministic_init(net)
    return net.eval(), fx


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def as_tensor(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a)).to(dtype)
