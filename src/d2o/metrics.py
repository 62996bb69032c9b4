"""Evaluation metrics (FID, IS, precision/recall, CLIP-FID) through torch-fidelity 0.4.0.

Spec: /work/shared/spec/metrics-protocols.md (whole file) and d2o-reproduction-facts.md §8.
torch-fidelity does the feature extraction, the FID formula, the Inception Score and the k-NN precision/recall;
this module only fixes the protocol around it and guards against the traps of version 0.4.0:

- `cuda` defaults to True there and calls `.cuda()` unconditionally: every call here passes
  `cuda=torch.cuda.is_available()` unless a device is given.
- Unknown keyword arguments are silently ignored there: every call goes through `calculate_metrics()` /
  `check_fidelity_kwargs()`, which raise on any name that is not a key of `torch_fidelity.defaults.DEFAULTS`.
- Class-conditional generator wrappers crash on `np.int` with NumPy >= 1.24: this module never uses
  `GenerativeModelModuleWrapper`; generated images are fed as Datasets of uint8 images.
- Cache keys ignore weights, dtype and sample count (stale results): every call passes `cache=False`.
- torch-fidelity installs a top-level `tests` package; the project's tests therefore have no `tests/__init__.py`.

FID follows EDM's protocol (facts §8): exactly `num_samples` images (fail if fewer, seeded random subset if more),
float64 mean and unbiased covariance of the 2048-d Inception pool features, FID via
`torch_fidelity.metric_fid.fid_statistics_to_metric`. EDM fid-refs `.npz` files (keys `mu`, `sigma`) load directly.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import PIL.Image
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
import torchvision.transforms as T
from torch.utils.data import Dataset, Subset
from torch_fidelity.defaults import DEFAULTS as FIDELITY_DEFAULTS
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.helpers import text_to_dtype
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from d2o.datasets import ImageZipDataset
from d2o.demo_cnn import NAME as DEMO_CNN_NAME
from d2o.demo_cnn import DemoCNNExtractor, DemoExtractorBase
from d2o.io import atomic_path

PAPER_LABEL = "paper protocol"
DEMO_LABEL = "demo features, not comparable with the paper"
DEMO_EXTRACTOR = "d2o-demo-randcnn"
DEMO_TRAINED = DEMO_CNN_NAME  # the demo's trained extractor (d2o.demo_cnn)

# ----------------------------------------------------------------------------------------------------------------
# torch-fidelity calls with checked keyword names.


def check_fidelity_kwargs(kwargs: dict) -> None:
    """Raise TypeError on any keyword torch-fidelity 0.4.0 does not know (it would silently ignore it)."""
    unknown = sorted(set(kwargs) - set(FIDELITY_DEFAULTS))
    if unknown:
        raise TypeError(
            f"d2o.metrics: unknown torch-fidelity argument(s) {unknown}; torch_fidelity {torch_fidelity.__version__} "
            f"would silently ignore them. Use only keys of torch_fidelity.defaults.DEFAULTS "
            f"(e.g. 'isc_splits', 'prc_neighborhood', 'feature_layer_prc')."
        )


def _device_flags(device) -> tuple[bool, torch.device]:
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"d2o.metrics: device {device} not supported by torch-fidelity (use 'cpu' or 'cuda[:i]').")
    return device.type == "cuda", device


def _device_context(device: torch.device):
    """torch-fidelity moves tensors with bare `.cuda()`: select the CUDA device it should mean."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device.index)
    return contextlib.nullcontext()


def calculate_metrics(device=None, **kwargs) -> dict:
    """`torch_fidelity.calculate_metrics` with checked keyword names and safe defaults.

    Defaults: `cuda` from `device` (or `torch.cuda.is_available()`), `cache=False` (0.4.0 cache keys go stale),
    `save_cpu_ram=True` (no DataLoader workers, chunked PRC), `verbose=False`.
    """
    check_fidelity_kwargs(kwargs)
    if "cuda" not in kwargs:
        kwargs["cuda"], dev = _device_flags(device)
    else:
        dev = torch.device("cuda" if kwargs["cuda"] else "cpu")
    kwargs.setdefault("cache", False)
    kwargs.setdefault("save_cpu_ram", True)
    kwargs.setdefault("verbose", False)
    with _device_context(dev):
        return torch_fidelity.calculate_metrics(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Datasets of uint8 images (what torch-fidelity consumes: uint8 CHW tensors, 3 channels).


class UInt8ImageDataset(Dataset):
    """uint8 images from an array of shape (N, H, W, C) or (N, C, H, W), C in {1, 3}; items are uint8 CHW tensors.

    `layout` is "NHWC", "NCHW" or None (inferred; ambiguous shapes raise). One channel is repeated to three (as EDM).
    """

    def __init__(self, images, layout: str | None = None):
        images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images.detach().cpu()
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"UInt8ImageDataset: need a 4-D uint8 array, got {tuple(images.shape)} {images.dtype}.")
        if layout is None:
            nchw, nhwc = images.shape[1] in (1, 3), images.shape[3] in (1, 3)
            if nchw == nhwc:
                raise ValueError(f"UInt8ImageDataset: cannot infer layout of shape {tuple(images.shape)}; pass layout.")
            layout = "NCHW" if nchw else "NHWC"
        if layout == "NHWC":
            images = images.permute(0, 3, 1, 2)
        elif layout != "NCHW":
            raise ValueError(f"UInt8ImageDataset: layout must be 'NHWC' or 'NCHW', got {layout!r}.")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"UInt8ImageDataset: need 1 or 3 channels, got shape {tuple(images.shape)} ({layout}).")
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, idx):
        x = self.images[idx]
        return (x.expand(3, -1, -1) if x.shape[0] == 1 else x).contiguous()


def as_image_dataset(images) -> Dataset:
    """A Dataset as is; a path ending in .zip as d2o.datasets.ImageZipDataset; a uint8 array as `UInt8ImageDataset`."""
    if isinstance(images, Dataset):
        return images
    if isinstance(images, (str, os.PathLike)):
        if str(images).endswith(".zip"):
            return ImageZipDataset(images)
        raise ValueError(f"{images}: expected an EDM-format .zip of PNGs (see d2o.datasets.write_dataset_zip).")
    return UInt8ImageDataset(images)


def select_subset(dataset: Dataset, num_samples: int | None, allow_fewer: bool = False, seed: int = 0) -> Dataset:
    """EDM's sample-count rule (facts §8): exactly `num_samples`; more -> random subset, fewer -> error.

    The subset is EDM's: `np.random.RandomState(seed).shuffle(arange(N))`, first `num_samples`, sorted.
    `num_samples=None` keeps every image.
    """
    n = len(dataset)
    if num_samples is None or n == num_samples:
        return dataset
    if n < num_samples:
        if allow_fewer:
            return dataset
        raise ValueError(f"d2o.metrics: {n} images but the protocol needs {num_samples}; generate more images "
                         f"or pass allow_fewer=True (the result is then not comparable).")
    idx = np.arange(n, dtype=np.int64)
    np.random.RandomState(seed % (1 << 31)).shuffle(idx)
    return Subset(dataset, np.sort(idx[:num_samples]).tolist())


# ----------------------------------------------------------------------------------------------------------------
# Demo extractor: a deterministic random-weight CNN, no weight file, no download.


class DemoRandomCNN(DemoExtractorBase):
    """Offline stand-in feature extractor "d2o-demo-randcnn": uint8 NCHW of any size -> bilinear to 32x32 ->
    three random 3x3 convs (He-normal weights from a fixed `torch.Generator` seed) -> global mean pool.

    Layers: 'feat' (128-d, for fid/kid/prc) and 'logits' (10-d, a random linear map of 'feat', for isc).
    Its numbers are only for pipeline checks: label "demo features, not comparable with the paper".
    """

    SEED = 20250713
    WIDTHS = (3, 32, 64, 128)
    DUMMY_SIZE = 32

    def __init__(self, name, features_list, **kwargs):  # every calculate_metrics kwarg is forwarded here
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(self.SEED)
        self.convs = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(self.WIDTHS[:-1], self.WIDTHS[1:])):
            conv = nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1)
            conv.weight.data = torch.randn(conv.weight.shape, generator=g) * np.sqrt(2 / (cin * 9))
            conv.bias.data = torch.randn(cout, generator=g) * 0.1
            self.convs.append(conv)
        self.fc = nn.Linear(self.WIDTHS[-1], 10)
        self.fc.weight.data = torch.randn(self.fc.weight.shape, generator=g) * np.sqrt(1 / self.WIDTHS[-1]) * 4
        self.fc.bias.data = torch.zeros(10)
        self.requires_grad_(False)
        self.eval()

    def features(self, x):
        x = x.to(torch.float32) / 127.5 - 1
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        for conv in self.convs:
            x = F.relu(conv(x))
        feat = x.mean(dim=(2, 3))
        return {"feat": feat, "logits": self.fc(feat)}


def register_demo_extractor() -> None:
    """Register "d2o-demo-randcnn" with torch-fidelity once per process (a second registration would raise)."""
    if DEMO_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(DEMO_EXTRACTOR, DemoRandomCNN)


register_demo_extractor()


# The paper's extractors, built from the registry's converted weight files (d2o.weights) without running code from a
# download: torch-fidelity's own classes read a .pth with torch.load(weights_only=False) and CLIP's TorchScript archive
# with torch.jit.load. These subclasses take over the two names: a `.safetensors` weights path is read here; no path
# (outside DAG jobs only) keeps torch-fidelity's download.


class RegistryInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's 'inception-v3-compat' from a converted registry file (its state_dict handed over in memory)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        from d2o.weights import INCEPTION, check_hub_allowed, read_state_dict

        path = feature_extractor_weights_path
        if path is None:
            check_hub_allowed(INCEPTION, "d2o.metrics")
        elif str(path).endswith(".safetensors"):
            buf = io.BytesIO()
            torch.save(read_state_dict(path, INCEPTION), buf)
            buf.seek(0)
            path = buf
        super().__init__(name, features_list, feature_extractor_weights_path=path, **kwargs)


class RegistryCLIP(FeatureExtractorCLIP):
    """torch-fidelity's 'clip-vit-b-32' from a converted registry file: its `build_model` on the state_dict (what
    torch-fidelity does with the TorchScript archive's state_dict), the archive itself never loaded."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, feature_extractor_internal_dtype=None,
                 **kwargs):
        from d2o.weights import CLIP, check_hub_allowed, clip_from_state, read_state_dict

        path = feature_extractor_weights_path
        if path is None or not str(path).endswith(".safetensors"):
            if path is None:
                check_hub_allowed(CLIP, "d2o.metrics")
            super().__init__(name, features_list, feature_extractor_weights_path=path,
                             feature_extractor_internal_dtype=feature_extractor_internal_dtype, **kwargs)
            return
        FeatureExtractorBase.__init__(self, name, features_list)
        self.feature_extractor_internal_dtype = text_to_dtype(feature_extractor_internal_dtype, "float32")
        self.model = clip_from_state(read_state_dict(path, CLIP), self.feature_extractor_internal_dtype)
        self.resolution = self.model.visual.input_resolution
        self.requires_grad_(False)


FEATURE_EXTRACTORS_REGISTRY["inception-v3-compat"] = RegistryInceptionV3
FEATURE_EXTRACTORS_REGISTRY["clip-vit-b-32"] = RegistryCLIP


FEATURE_EXTRACTORS_REGISTRY[DEMO_TRAINED] = DemoCNNExtractor


def extractor_settings(mode: str) -> dict:
    """Feature extractor names/layers per metric and the result label, by the registry's `metrics.extractor`:
    `inception` (the paper protocol: Inception-v3, CLIP ViT-B/32 for CLIP-FID), `demo-trained` (the CNN the DAG
    trains on the demo shapes, d2o.demo_cnn, for every demo metric) or `demo` (a fixed random CNN)."""
    if mode in ("demo", "demo-trained"):
        name = DEMO_EXTRACTOR if mode == "demo" else DEMO_TRAINED
        return dict(feature_extractor=name, layer_fid="feat", layer_isc="logits", layer_prc="feat",
                    clip_extractor=name, layer_clip="feat", label=DEMO_LABEL)
    return dict(feature_extractor="inception-v3-compat", layer_fid="2048", layer_isc="logits_unbiased",
                layer_prc="2048", clip_extractor="clip-vit-b-32", layer_clip="clip", label=PAPER_LABEL)


def _label_for(feature_extractor: str) -> str:
    return DEMO_LABEL if feature_extractor in (DEMO_EXTRACTOR, DEMO_TRAINED) else PAPER_LABEL


# ----------------------------------------------------------------------------------------------------------------
# Features and statistics.


def extract_features(dataset, feature_extractor: str = "inception-v3-compat", layers=("2048",),
                     weights_path=None, batch_size: int = 64, device=None, internal_dtype: str | None = None,
                     verbose: bool = False) -> dict[str, torch.Tensor]:
    """Features of every image of `dataset` (uint8 CHW items) with a registered torch-fidelity extractor.

    Uses torch-fidelity's own `create_feature_extractor` and `get_featuresdict_from_dataset` (no DataLoader
    workers). Returns {layer: float32 tensor (N, D)} on the CPU.
    """
    dataset = as_image_dataset(dataset)
    cuda, dev = _device_flags(device)
    fe_kwargs = dict(feature_extractor_weights_path=None if weights_path is None else str(weights_path),
                     feature_extractor_internal_dtype=internal_dtype, verbose=verbose)
    check_fidelity_kwargs(fe_kwargs)
    with _device_context(dev):
        fe = create_feature_extractor(feature_extractor, list(layers), cuda=cuda, **fe_kwargs)
        return get_featuresdict_from_dataset(dataset, fe, batch_size, cuda, True, verbose)


def features_to_stats(features) -> dict:
    """float64 mean and unbiased (N-1) covariance of (N, D) features, as EDM's fid.py."""
    f = np.asarray(features.numpy() if torch.is_tensor(features) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"d2o.metrics: need (N >= 2, D) features for statistics, got shape {f.shape}.")
    return {"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)}


def compute_stats(dataset, feature_extractor: str = "inception-v3-compat", layer: str = "2048", weights_path=None,
                  batch_size: int = 64, device=None, internal_dtype: str | None = None, verbose: bool = False) -> dict:
    """{"mu": float64 (D,), "sigma": float64 (D, D)} of one feature layer over all images of `dataset`."""
    feats = extract_features(dataset, feature_extractor, (layer,), weights_path, batch_size, device,
                             internal_dtype, verbose)
    return features_to_stats(feats[layer])


def save_stats(stats: dict, path) -> None:
    """Write {"mu", "sigma"} to an .npz (the layout of EDM's fid-refs), atomically."""
    if not str(path).endswith(".npz"):
        raise ValueError(f"{path}: statistics files must end in .npz.")
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, mu=np.asarray(stats["mu"], np.float64), sigma=np.asarray(stats["sigma"], np.float64))


def load_stats(path) -> dict:
    """Read {"mu", "sigma"} (float64) from an .npz written by `save_stats` or an EDM fid-refs file."""
    with np.load(path) as z:
        missing = {"mu", "sigma"} - set(z.files)
        if missing:
            raise KeyError(f"{path}: missing key(s) {sorted(missing)} (has {z.files}); expected an EDM fid-refs "
                           f"npz or a file from d2o.metrics.save_stats.")
        return {"mu": z["mu"].astype(np.float64), "sigma": z["sigma"].astype(np.float64)}


def fid_from_stats(s1: dict, s2: dict) -> float:
    """FID between two {"mu", "sigma"} via torch-fidelity's `fid_statistics_to_metric` (dtypes cast to float64)."""
    a = {k: np.asarray(s1[k], np.float64) for k in ("mu", "sigma")}
    b = {k: np.asarray(s2[k], np.float64) for k in ("mu", "sigma")}
    if a["mu"].shape != b["mu"].shape or a["sigma"].shape != b["sigma"].shape:
        raise ValueError(f"d2o.metrics: statistics of different feature sizes {a['mu'].shape} vs {b['mu'].shape} "
                         f"(mixed feature extractors or layers?).")
    return float(fid_statistics_to_metric(a, b, verbose=False)[KEY_METRIC_FID])


# ----------------------------------------------------------------------------------------------------------------
# Metrics with JSON-ready results.


def _result(metric, value, num_samples, reference, feature_extractor, layer, settings, label=None) -> dict:
    return {"metric": metric, "value": value, "num_samples": int(num_samples), "reference": reference,
            "feature_extractor": feature_extractor, "layer": layer,
            "label": label or _label_for(feature_extractor),
            "settings": {"torch_fidelity": torch_fidelity.__version__, **settings}}


def _reference_stats(ref, feature_extractor, layer, ref_num_samples, seed, fe_args):
    """(stats, description, count) for ref = stats dict, .npz path, or images (Dataset/zip/array)."""
    if isinstance(ref, dict):
        return ref, "statistics", None
    if isinstance(ref, (str, os.PathLike)) and str(ref).endswith(".npz"):
        return load_stats(ref), str(ref), None
    desc = str(ref) if isinstance(ref, (str, os.PathLike)) else "images"
    ds = select_subset(as_image_dataset(ref), ref_num_samples, allow_fewer=ref_num_samples is None, seed=seed)
    return compute_stats(ds, feature_extractor, layer, **fe_args), desc, len(ds)


def compute_fid(samples, ref, num_samples: int | None = 50000, allow_fewer: bool = False,
                feature_extractor: str = "inception-v3-compat", layer: str = "2048", weights_path=None,
                batch_size: int = 64, device=None, ref_num_samples: int | None = None, reference_name=None,
                seed: int = 0, label: str | None = None, verbose: bool = False, metric_name: str = "fid") -> dict:
    """FID of generated `samples` against `ref` (EDM protocol, facts §8).

    samples: Dataset of uint8 CHW images, EDM zip path, or uint8 array; exactly `num_samples` are used
    (EDM's seeded subset if more; error if fewer unless `allow_fewer`). ref: {"mu","sigma"} dict, an .npz
    (EDM fid-refs or `save_stats`), or images (all of them, or `ref_num_samples` by the same rule).
    """
    fe_args = dict(weights_path=weights_path, batch_size=batch_size, device=device, verbose=verbose)
    ds = select_subset(as_image_dataset(samples), num_samples, allow_fewer, seed)
    stats = compute_stats(ds, feature_extractor, layer, **fe_args)
    ref_stats, ref_desc, ref_count = _reference_stats(ref, feature_extractor, layer, ref_num_samples, seed, fe_args)
    settings = dict(batch_size=batch_size, device=str(_device_flags(device)[1]), subset_seed=seed,
                    weights_path=None if weights_path is None else str(weights_path),
                    requested_num_samples=num_samples, allow_fewer=allow_fewer, ref_num_samples=ref_count)
    return _result(metric_name, fid_from_stats(stats, ref_stats), len(ds), reference_name or ref_desc,
                   feature_extractor, layer, settings, label)


def compute_fid_generated(samples_a, samples_b, num_samples: int | None = 50000, **kwargs) -> dict:
    """FID between two generated sets (e.g. teacher vs student); both follow the same sample-count rule."""
    kwargs.setdefault("reference_name", "generated set b")
    return compute_fid(samples_a, as_image_dataset(samples_b), num_samples=num_samples,
                       ref_num_samples=num_samples, **kwargs)


def compute_is(samples, splits: int = 10, shuffle: bool = False, num_samples: int | None = None,
               allow_fewer: bool = False, feature_extractor: str = "inception-v3-compat",
               layer: str = "logits_unbiased", weights_path=None, batch_size: int = 64, device=None,
               seed: int = 0, label: str | None = None, verbose: bool = False) -> dict:
    """Inception Score (torch-fidelity isc). Default `shuffle=False`: the D2O/guided-diffusion evaluator's
    contiguous splits (spec §5). value = mean over splits; "std" is added next to it."""
    ds = select_subset(as_image_dataset(samples), num_samples, allow_fewer, seed)
    out = calculate_metrics(device=device, input1=ds, isc=True, isc_splits=splits, samples_shuffle=shuffle,
                            feature_extractor=feature_extractor, feature_layer_isc=layer, batch_size=batch_size,
                            feature_extractor_weights_path=None if weights_path is None else str(weights_path),
                            verbose=verbose)
    settings = dict(splits=splits, shuffle=shuffle, batch_size=batch_size, device=str(_device_flags(device)[1]),
                    weights_path=None if weights_path is None else str(weights_path))
    res = _result("is", out["inception_score_mean"], len(ds), None, feature_extractor, layer, settings, label)
    res["std"] = out["inception_score_std"]
    return res


def _pairwise_sq_distances(u: torch.Tensor, v: torch.Tensor, arithmetic: str) -> torch.Tensor:
    """Squared Euclidean distances |u_i - v_j|^2 as ||u||^2 - 2 u.v + ||v||^2, clamped at 0 (float32 result).

    arithmetic "fp16": the guided-diffusion evaluator's (the paper's Table 6 P/R): features cast to float16, the
    norms and the product accumulated in float32 and rounded to float16 (GPU reductions and tensor-core matmuls),
    each of the two additions rounded to float16; a block with an overflow is recomputed in float32, as it does.
    arithmetic "fp32": the same formula in float32."""
    u, v = u.float(), v.float()
    if arithmetic == "fp16":
        u16, v16 = u.half().float(), v.half().float()
        nu = u16.square().sum(1).half().float()[:, None]
        nv = v16.square().sum(1).half().float()[None, :]
        mm = (u16 @ v16.T).half().float()
        d = ((nu - 2 * mm).half().float() + nv).half()
        if torch.isfinite(d).all():
            return d.float().clamp_min(0)
    elif arithmetic != "fp32":
        raise ValueError(f"d2o.metrics: P/R arithmetic {arithmetic!r}; use 'fp16' (the evaluator's) or 'fp32'")
    return (u.square().sum(1)[:, None] - 2 * u @ v.T + v.square().sum(1)[None, :]).clamp_min(0)


def manifold_radii(features: torch.Tensor, k: int = 3, arithmetic: str = "fp16", block: int = 10000) -> torch.Tensor:
    """Squared distance of every feature to its k-th nearest neighbour in the same set (itself at distance 0 counted
    first, as the evaluator's np.partition at index k), computed in row blocks of `block`."""
    radii = torch.empty(len(features))
    for a in range(0, len(features), block):
        d = torch.cat([_pairwise_sq_distances(features[a:a + block], features[b:b + block], arithmetic)
                       for b in range(0, len(features), block)], dim=1)
        radii[a:a + block] = d.kthvalue(k + 1, dim=1).values.cpu()
    return radii


def precision_recall(ref: torch.Tensor, samples: torch.Tensor, k: int = 3, arithmetic: str = "fp16",
                     block: int = 10000) -> dict:
    """Improved precision/recall (Kynkaenniemi et al. 2019) as guided-diffusion's evaluator computes it: precision =
    share of samples within the k-NN radius of some reference feature; recall = share of references within the
    radius of some sample; squared distances compared with `<=`."""
    r_ref, r_smp = manifold_radii(ref, k, arithmetic, block), manifold_radii(samples, k, arithmetic, block)
    smp_in = torch.zeros(len(samples), dtype=torch.bool)
    ref_in = torch.zeros(len(ref), dtype=torch.bool)
    for a in range(0, len(ref), block):
        for b in range(0, len(samples), block):
            d = _pairwise_sq_distances(ref[a:a + block], samples[b:b + block], arithmetic).cpu()
            ref_in[a:a + block] |= (d <= r_smp[None, b:b + block]).any(1)
            smp_in[b:b + block] |= (d <= r_ref[a:a + block, None]).any(0)
    p, r = float(smp_in.double().mean()), float(ref_in.double().mean())
    return {"precision": p, "recall": r, "f_score": 2 * p * r / (p + r) if p + r else 0.0}


def compute_pr(samples, refs, k: int = 3, num_samples: int | None = None, allow_fewer: bool = False,
               feature_extractor: str = "inception-v3-compat", layer: str = "2048", weights_path=None,
               batch_size: int = 64, device=None, seed: int = 0, reference_name=None, label: str | None = None,
               verbose: bool = False) -> dict:
    """Improved precision/recall of generated `samples` against reference images `refs` (D2O Table 6 protocol: k = 3,
    Inception '2048' features, all samples against the reference batch; spec §8).

    value = the guided-diffusion evaluator's arithmetic (float16 distances, `precision_recall(..., "fp16")`), the
    paper protocol; value["fp32"] = the same in float32 (torch-fidelity's prc decisions)."""
    ds = select_subset(as_image_dataset(samples), num_samples, allow_fewer, seed)
    ref_ds = as_image_dataset(refs)
    fe = dict(feature_extractor=feature_extractor, layers=(layer,), weights_path=weights_path, batch_size=batch_size,
              device=device, verbose=verbose)
    f_smp, f_ref = extract_features(ds, **fe)[layer], extract_features(ref_ds, **fe)[layer]
    dev = _device_flags(device)[1]
    f_smp, f_ref = f_smp.to(dev), f_ref.to(dev)
    value = precision_recall(f_ref, f_smp, k, "fp16")
    value["fp32"] = precision_recall(f_ref, f_smp, k, "fp32")
    settings = dict(k=k, ref_num_samples=len(ref_ds), batch_size=batch_size, device=str(dev),
                    arithmetic="fp16 distances (guided-diffusion evaluator); value.fp32: float32",
                    weights_path=None if weights_path is None else str(weights_path))
    ref_desc = reference_name or (str(refs) if isinstance(refs, (str, os.PathLike)) else "images")
    return _result("pr", value, len(ds), ref_desc, feature_extractor, layer, settings, label)


# ----------------------------------------------------------------------------------------------------------------
# CLIP-FID, clean-fid protocol (spec §4).


class CleanFIDClipResize(Dataset):
    """clean-fid's CLIP preprocessing on uint8 CHW items: PIL bicubic resize of the shorter side to `size`,
    centre crop `size`x`size`, back to uint8 (torch-fidelity's own bilinear-to-224 is a different protocol)."""

    def __init__(self, dataset, size: int = 224):
        self.dataset = as_image_dataset(dataset)
        self.size = size
        self.transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        img = PIL.Image.fromarray(self.dataset[idx].permute(1, 2, 0).numpy()).convert("RGB")
        return torch.from_numpy(np.array(self.transform(img), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def compute_clip_fid(samples, ref, num_samples: int | None = 50000, allow_fewer: bool = False,
                     feature_extractor: str = "clip-vit-b-32", layer: str = "clip", weights_path=None,
                     batch_size: int = 64, device=None, ref_num_samples: int | None = None, reference_name=None,
                     seed: int = 0, label: str | None = None, verbose: bool = False) -> dict:
    """CLIP-FID as clean-fid computes it: `CleanFIDClipResize` then torch-fidelity 'clip-vit-b-32' 512-d features.

    `ref` images are preprocessed the same way; ref statistics (dict/.npz) must have been computed on
    `CleanFIDClipResize(images)` with the same extractor.
    """
    if not isinstance(ref, dict) and not str(ref).endswith(".npz"):
        ref = CleanFIDClipResize(ref)
    res = compute_fid(CleanFIDClipResize(samples), ref, num_samples, allow_fewer, feature_extractor, layer,
                      weights_path, batch_size, device, ref_num_samples, reference_name, seed, label, verbose,
                      metric_name="clip_fid")
    res["settings"]["preprocess"] = "PIL bicubic shorter side to 224 + centre crop 224 + uint8 (clean-fid)"
    return res
