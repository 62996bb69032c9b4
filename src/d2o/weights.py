"""External pretrained weights (registry `weights`): which network reads which file, converted once, never fetched by a job.

Compute nodes often have no internet, and 50 jobs starting at once would race to fill one `~/.cache`. So every
pretrained network a job reads is a registry entry named after the network; rules/weights.smk downloads it on the
submit host (verified: d2o.download), `convert_weight` turns it into one safetensors file without running code from
it, and the job receives that file as a declared input. Jobs run with the hubs switched off (`HUB_OFF`): a network
asked for pretrained weights that the job was not given fails at once, naming the registry key to add.

| registry key (= network)           | kind                     | upstream file                                 | read by |
|------------------------------------|--------------------------|-----------------------------------------------|---------|
| `vgg16_bn`                         | torchvision              | torch.save'd state_dict                       | projected D (CIFAR-10) |
| `vgg16`                            | torchvision              | torch.save'd state_dict                       | Table 1 VGG16 / LPIPS D, CD's LPIPS |
| `tf_efficientnet_lite0`            | timm                     | state_dict (timm 0.5.4's release)             | projected D |
| `deit_base_distilled_patch16_224`  | timm                     | `{"model": state_dict}` (facebookresearch/deit) | projected D (64x64) |
| `inception-v3-compat`              | torch-fidelity-inception | torch-fidelity's state_dict                   | FID, IS, precision/recall |
| `clip-vit-b-32`                    | clip-torchscript         | OpenAI's TorchScript archive (read, not run)  | CLIP-FID |
| a class embedding (any name)       | class-embedding          | StyleGAN-XL's dill pickle (read, not run)     | conditional projected D |

LPIPS' linear layers ship inside the `lpips` package; only its VGG16 backbone is a download (`vgg16`).
A converted file holds the upstream state_dict under its own key names (checked against the architecture of the
installed library: names and shapes) and records in its metadata the network, the kind and the source's SHA-256.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

FORMAT = "d2o-weights-v1"
HUB_OFF = "D2O_NO_HUB_WEIGHTS"  # set in every job's environment (rules/common.smk): no library may fetch weights
INCEPTION, CLIP = "inception-v3-compat", "clip-vit-b-32"
DAG_TRAINED = ("demo-cnn",)  # backbones whose weights the DAG trains itself (registry demo_cnns; d2o.demo_cnn)
KINDS = {  # kind -> the networks it can hold (class-embedding: any registry name)
    "torchvision": ("vgg16_bn", "vgg16"),
    "timm": ("tf_efficientnet_lite0", "deit_base_distilled_patch16_224"),
    "torch-fidelity-inception": (INCEPTION,),
    "clip-torchscript": (CLIP,),
    "class-embedding": None,
}


class WeightsError(ValueError):
    """A weights file that is not what the registry names, or a network asked for weights nobody gave it."""


# ------------------------------------------------------------------------------------------ which run reads what


def training_weights(t) -> tuple[str, ...]:
    """Registry weights a training run (d2o.settings.Training) reads: its discriminator's pretrained networks, the
    class embedding of its conditional heads, CD's LPIPS backbone. An offline registry reads none (random init) but
    the backbones the DAG trains itself (the demo's `demo-cnn`)."""
    names = []
    d = t.discriminator if t.uses_gan else None
    if d is not None and d.type == "projected":  # the demo's trained backbone even offline: the DAG makes it
        names += [b for b in d.backbones if b in DAG_TRAINED or not t.offline and b != "tiny"]
        if d.class_embedding and t.label_dim and not t.offline:
            names.append(d.class_embedding)
    if t.offline:
        return tuple(names)
    if d is not None and d.type in ("vgg16", "lpips"):
        names.append("vgg16")
    if t.uses_cd:
        names.append("vgg16")  # LPIPS' VGG16 backbone
    return tuple(dict.fromkeys(names))


def metric_weights(metric: str, features) -> tuple[str, ...]:
    """Registry weights a metric job (d2o.settings.MetricFeatures) reads: Inception or CLIP ViT-B/32."""
    if features.offline or features.extractor != "inception":  # the demo's extractors: no download
        return ()
    return (CLIP,) if metric == "clip_fid" else (INCEPTION,)


def missing_weights_error(network: str, where: str) -> WeightsError:
    return WeightsError(f"{where}: network {network!r} needs pretrained weights and none were given to this job (jobs "
                        f"never fetch weights from a hub); add `weights.{network}` (kind, url, sha256) to the registry: "
                        f"the DAG downloads and verifies it on the submit host and passes the local file")


def check_hub_allowed(network: str, where: str) -> None:
    """Called where a library would fetch `network`'s weights itself: refused inside DAG jobs (HUB_OFF set)."""
    if os.environ.get(HUB_OFF):
        raise missing_weights_error(network, where)


# ------------------------------------------------------------------------------------------ architectures


def _torchvision(name: str) -> torch.nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def _timm(name: str) -> torch.nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def inception_from_state(state: dict) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 ('inception-v3-compat') built from `state` (strict: names and shapes checked)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=buf)


def clip_from_state(state: dict, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """torch-fidelity's CLIP model built from `state` (its build_model infers the dimensions; strict load)."""
    from torch_fidelity.feature_extractor_clip import build_model

    return build_model(dict(state), dtype)


def _check_architecture(name: str, kind: str, state: dict, src: Path) -> None:
    """Load `state` into the installed library's `name` architecture (strict): a clear error naming the file when key
    names or shapes differ (another version of the network, or another network)."""
    try:
        if kind in ("torchvision", "timm"):
            with torch.device("meta"):
                model = (_torchvision if kind == "torchvision" else _timm)(name)
            model.load_state_dict(state, strict=True, assign=True)
        elif kind == "torch-fidelity-inception":
            inception_from_state(state)
        elif kind == "clip-torchscript":
            clip_from_state(state)
    except (RuntimeError, KeyError, ValueError) as e:
        msg = str(e).strip().splitlines()
        raise WeightsError(f"{src}: not the weights of {name!r} (kind {kind}) for the installed library: "
                           f"{' '.join(msg[:3])[:600]}; check the registry's weights.{name}.url") from None


# ------------------------------------------------------------------------------------------ conversion


def read_upstream(kind: str, src: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict of an upstream file, read without running code from it: `torch.load(weights_only=True)` for
    the pickled state dicts (refuses any global but tensors and containers), the TorchScript reader for CLIP."""
    src = Path(src)
    if kind == "clip-torchscript":
        from d2o.torchscript_weights import read_torchscript_state_dict

        return read_torchscript_state_dict(src)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure: not a plain state dict
        raise WeightsError(f"{src}: not a plain PyTorch state dict ({type(e).__name__}: {str(e)[:300]}); check the "
                           "url (or the file copied into place)") from None
    for wrapper in ("model", "state_dict"):  # DeiT's {"model": ...}, training checkpoints' {"state_dict": ...}
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{src}: holds a {type(obj).__name__}, not a state dict of tensors")
    return obj


def convert_weight(name: str, kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Convert the upstream file `src` of registry weight `name` into `dst` (safetensors, atomic); returns its
    metadata. Key names and shapes are checked against the installed library's architecture."""
    from d2o.download import sha256_file

    src, dst = Path(src), Path(dst)
    if kind not in KINDS:
        raise WeightsError(f"weights.{name}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "class-embedding":
        from d2o.class_embedding import convert_class_embedding

        return convert_class_embedding(src, dst, extra={"weights": name})
    if name not in KINDS[kind]:
        raise WeightsError(f"weights.{name}: kind {kind} holds the networks {', '.join(KINDS[kind])}; a weights "
                           f"entry is named after the network that reads it")
    state = read_upstream(kind, src)
    if kind == "clip-torchscript":  # CLIP-FID reads the image tower only (torch-fidelity's build_model)
        state = {k: v for k, v in state.items() if k.startswith("visual.") or k == "text_projection"}
    _check_architecture(name, kind, state, src)
    import safetensors.torch

    meta = dict(format=FORMAT, network=name, kind=kind, source_name=src.name, source_sha256=sha256_file(src))
    state = {k: v.detach().contiguous() for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    safetensors.torch.save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, dst)
    return meta


def read_state_dict(path: str | os.PathLike, network: str) -> dict[str, torch.Tensor]:
    """The state_dict of `network` in `path`: a converted file (`convert_weight`; a file of another network is
    refused), or a plain state dict (.safetensors, or torch.save read with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file of {network!r} not found")
    if path.suffix != ".safetensors":
        return read_upstream("torchvision", path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") == FORMAT and meta.get("network") != network:
            raise WeightsError(f"{path}: holds the weights of {meta.get('network')!r}, not of {network!r}")
        return {k: f.get_tensor(k) for k in f.keys()}


def weights_record(paths) -> dict[str, str]:
    """{network: SHA-256 of its upstream file} of converted weight files (what a result was computed with)."""
    from safetensors import safe_open

    from d2o.download import sha256_file

    out = {}
    for p in map(Path, paths):
        meta = {}
        if p.suffix == ".safetensors":
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
        out[meta.get("network") or meta.get("weights") or p.stem] = meta.get("source_sha256") or sha256_file(p)
    return out
