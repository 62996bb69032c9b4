"""Small CNNs the DAG trains on the demo's procedural shapes (DEMO ONLY): its metric extractor and its discriminator's
pretrained backbone.

The demo has no ImageNet. With random feature networks, its Projected-GAN discriminator could not tell a shape from
noise (one-step D2O learned coloured noise), and its random-CNN metric could not see it either (it put that noise and
EDM's shapes at the same FID). So the DAG trains two CNNs (registry `demo_cnns`, rule `train_demo_cnn`), each
deterministically in seconds on a CPU, to read what the demo images are made of: the shape class (disc, square,
triangle, ring: cross-entropy) and the scene's attributes (foreground colour, the two gradient colours, the shape's
radius and centre: regression), on fresh images of the demo dataset's own generator (`d2o.datasets.make_shapes`)
with their own seeds; `shape_accuracy` on the DAG's demo dataset (never trained on) is written beside each.
- The metric extractor (`metrics.demo_extractor`): `feat` (128-d) is the feature space of every demo FID /
  precision-recall / "CLIP"-FID, its shape `logits` that of the demo IS; torch-fidelity's "d2o-demo-cnn".
- The discriminator backbone (`demo-cnn`, d2o.feature_networks): the frozen conv trunk, another seed and other
  training images, as the paper's EfficientNet / DeiT (D) and Inception (metrics) are different ImageNet networks.
Their numbers mean something within the demo only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

NAME = "d2o-demo-cnn"
FORMAT = "d2o-demo-cnn-v2"
META_KEY = "d2o_demo_cnn"
ATTRIBUTES = 12  # foreground RGB, gradient RGB x 2, radius, centre (x, y)


class DemoCNN(nn.Module):
    """uint8 or float images -> bilinear to `resolution` -> 4 convs (32, 64, 64, 128 ch, two stride-2) -> `feat`
    (Linear 2048 -> 128, ReLU) -> shape `logits` (4) and attribute regression (12, training only)."""

    def __init__(self, resolution: int = 16, classes: int = 4):
        super().__init__()
        self.resolution = resolution
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU())
        self.feat = nn.Linear(128 * (resolution // 4) ** 2, 128)
        self.logits = nn.Linear(128, classes)
        self.attributes = nn.Linear(128, ATTRIBUTES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        f = F.relu(self.feat(self.convs(x).flatten(1)))
        return {"feat": f, "logits": self.logits(f), "attributes": self.attributes(f)}


def _batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_demo_cnn(spec: dict, resolution: int, eval_images: np.ndarray, eval_labels: np.ndarray,
                   out: str | os.PathLike, log=None, shapes: dict | None = None) -> dict:
    """Train DemoCNN on `spec["images"]` fresh shapes (seed `spec["seed"]`; `shapes`: the dataset's other
    make_shapes arguments, e.g. its radius range), `spec["steps"]` Adam steps of `spec["batch"]` at `spec["lr"]`;
    write it (safetensors) and its summary (`.json` beside it): shape accuracy on its training images and on
    `eval_images` (the DAG's demo dataset). Bitwise reproducible on one CPU thread (rule train_demo_cnn; with more,
    MKL's GEMM may split its work by the machine's load), and so is the file (one metadata key: safetensors writes
    several in a random order)."""
    from d2o.datasets import make_shapes
    from d2o.io import atomic_path, atomic_write_json

    torch.manual_seed(spec["seed"])
    images, labels, attrs = make_shapes(spec["images"], resolution, seed=spec["seed"], attributes=True, **(shapes or {}))
    x, y = _batch(images), torch.from_numpy(labels).long()
    a = torch.from_numpy(np.concatenate([attrs["fg"], attrs["bg0"], attrs["bg1"], attrs["radius"][:, None],
                                         attrs["center"]], 1)).float()
    a = (a - a.mean(0)) / a.std(0)
    net = DemoCNN(resolution, int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    g = torch.Generator().manual_seed(spec["seed"])
    for step in range(spec["steps"]):
        idx = torch.randint(len(x), (spec["batch"],), generator=g)
        o = net(x[idx])
        loss = F.cross_entropy(o["logits"], y[idx]) + F.mse_loss(o["attributes"], a[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and (step + 1) % max(1, spec["steps"] // 5) == 0:
            log.info("demo CNN step %d/%d  loss %.4f", step + 1, spec["steps"], float(loss.detach()))
    net.eval().requires_grad_(False)
    summary = {"format": FORMAT, "resolution": resolution, "spec": spec,
               "shape_accuracy_train": accuracy(net, images, labels),
               "shape_accuracy": accuracy(net, eval_images, eval_labels), "eval_images": len(eval_images),
               "label": "demo CNN (trained on the procedural shapes), not comparable with the paper"}
    import safetensors.torch

    out = Path(out)
    with atomic_path(out) as tmp:
        header = {"format": FORMAT, "resolution": resolution, "classes": net.logits.out_features}
        safetensors.torch.save_file(net.state_dict(), str(tmp), metadata={META_KEY: json.dumps(header, sort_keys=True)})
    atomic_write_json(out.with_suffix(".json"), summary)
    return summary


@torch.no_grad()
def accuracy(net: DemoCNN, images: np.ndarray, labels: np.ndarray, batch: int = 512) -> float:
    """Share of `images` (uint8 NHWC) whose predicted shape class is `labels`."""
    hits = sum(int((net(_batch(images[i:i + batch]))["logits"].argmax(1) == torch.from_numpy(labels[i:i + batch])).sum())
               for i in range(0, len(images), batch))
    return hits / len(images)


def load_demo_cnn(path: str | os.PathLike) -> DemoCNN:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a demo CNN ({meta.get('format')}); rule train_demo_cnn writes it")
        net = DemoCNN(int(meta["resolution"]), int(meta["classes"]))
        net.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    return net.eval().requires_grad_(False)


def summary_of(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


class DemoExtractorBase(FeatureExtractorBase):
    """torch-fidelity glue of the demo's extractors: uint8 Bx3xHxW in, layers 'feat' (FID, KID, PR) and 'logits' (IS)
    out of `features(x) -> dict`; not compiled."""

    DUMMY_SIZE = 16

    def features(self, x: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3):
            raise ValueError(f"{self.name}: expected uint8 Bx3xHxW, got {getattr(x, 'shape', None)}")
        out = self.features(x)
        return tuple(out[a] for a in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @classmethod
    def get_dummy_input_for_compile(cls):
        return torch.zeros(1, 3, cls.DUMMY_SIZE, cls.DUMMY_SIZE, dtype=torch.uint8)


class DemoCNNExtractor(DemoExtractorBase):
    """torch-fidelity extractor "d2o-demo-cnn": the trained DemoCNN read from `feature_extractor_weights_path`."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{NAME}: needs the trained CNN's file (rule train_demo_cnn)")
        self.net = load_demo_cnn(feature_extractor_weights_path)

    def features(self, x):
        return self.net(x)
