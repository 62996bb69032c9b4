"""The project's network format: one `.safetensors` file whose metadata carries a JSON header.

Header (metadata key `d2o_header`):
    {"format_version": 1, "class": "EDMPrecond", "init_kwargs": {...}, "extra": {...}}
`class` is a project class of `d2o.edm.networks` (looked up in `EDM_CLASS_MAP` by bare name), `init_kwargs` the
keyword arguments it was built with, `extra` free provenance (source checkpoint, its sha256, experiment, label).
Tensors are the module's `state_dict()`; loading is strict. Unlike a pickle, reading this format runs no code.

A module can only be saved if it knows its init kwargs: modules from `build(...)`, `load_model(...)` or
`d2o.edm.persistence.load_edm_pickle(...)` carry them in `module._d2o_init = (class_name, kwargs)`.

A header-only file (`save_header`: the header, no tensors) records a network's class and kwargs without weights: what
a random-init run reads (`build_fresh`), so it depends on the checkpoint's architecture, never on its weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from d2o.edm.persistence import EDMPickleError, instantiate_with, load_edm_pickle
from d2o.io import atomic_path

__all__ = ["FORMAT_VERSION", "build", "build_fresh", "save_model", "save_header", "load_model", "load_network",
           "convert_edm_pickle", "read_header"]

FORMAT_VERSION = 1
HEADER_KEY = "d2o_header"


def _classes() -> dict[str, type]:
    from d2o.edm.networks import EDM_CLASS_MAP
    return {key.rsplit(".", 1)[-1]: cls for key, cls in EDM_CLASS_MAP.items()}


def _json_kwargs(kwargs: dict, where: str) -> dict:
    """Round-trip the kwargs through JSON (tuples become lists, as in EDM's own kwargs) and fail clearly if needed."""
    try:
        return json.loads(json.dumps(kwargs, allow_nan=True))
    except TypeError as e:
        raise TypeError(f"{where}: init kwargs {kwargs!r} are not JSON-serialisable: {e}") from e


def _class_name(class_name: str, where: str) -> str:
    """The bare project class name of an (EDM, maybe dotted) class name; a KeyError naming the known ones otherwise."""
    name = class_name.rsplit(".", 1)[-1]
    if name not in _classes():
        raise KeyError(f"{where}: unknown network class {class_name!r}; known: {sorted(_classes())}")
    return name


def build(class_name: str, **kwargs) -> torch.nn.Module:
    """Build a project network by (EDM) class name and remember how: `net._d2o_init = (class_name, kwargs)`."""
    name = _class_name(class_name, "d2o.edm.model_io.build")
    net = _classes()[name](**kwargs)
    net._d2o_init = (name, dict(kwargs))
    return net


def _write(path: str | os.PathLike, class_name: str, kwargs: dict, extra: dict | None,
           tensors: dict[str, torch.Tensor], where: str) -> Path:
    header = {"format_version": FORMAT_VERSION, "class": class_name,
              "init_kwargs": _json_kwargs(kwargs, f"{where}({path})"), "extra": dict(extra or {})}
    try:
        header_json = json.dumps(header, allow_nan=True)
    except TypeError as e:
        raise TypeError(f"{where}({path}): `extra` is not JSON-serialisable: {e}") from e
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: header_json})
    return path


def save_model(net: torch.nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `net` (weights + class + init kwargs + `extra`) to `path` atomically in the project format."""
    init = getattr(net, "_d2o_init", None)
    if init is None:
        raise ValueError(f"save_model({type(net).__name__} -> {path}): the module does not record its init kwargs. "
                         "Create it with d2o.edm.model_io.build(class_name, **kwargs), load_model or load_edm_pickle, "
                         "or set net._d2o_init = (class_name, kwargs) yourself.")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    return _write(path, *init, extra, tensors, "save_model")


def save_header(class_name: str, kwargs: dict, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a header-only project file (class, init kwargs, `extra`; no tensors) atomically: a network without weights."""
    return _write(path, _class_name(class_name, f"save_header({path})"), kwargs,
                  {**dict(extra or {}), "header_only": True}, {}, "save_header")


def build_fresh(path: str | os.PathLike) -> torch.nn.Module:
    """A freshly initialised network (the current torch seed) of the class and kwargs in `path`'s header: a model file
    or a header-only one; no tensor is read."""
    header = read_header(path)
    return build(header["class"], **header["init_kwargs"])


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a project-format file (no tensors are read)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if HEADER_KEY not in meta:
        raise ValueError(f"{path}: safetensors file without a '{HEADER_KEY}' metadata entry; not a d2o model file "
                         "(write it with d2o.edm.model_io.save_model or convert_edm_pickle)")
    header = json.loads(meta[HEADER_KEY])
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: d2o model format_version {header.get('format_version')!r}, this code reads "
                         f"{FORMAT_VERSION}")
    return header


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the network stored at `path` (strict weight load), in eval mode, requires_grad False."""
    header = read_header(path)
    if header.get("extra", {}).get("header_only"):
        raise ValueError(f"{path}: a header-only file ({header['class']} without weights, written by save_header for "
                         "random-init runs); load its architecture with d2o.edm.model_io.build_fresh, or load the "
                         "checkpoint itself")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        net = instantiate_with(lambda: build(header["class"], **header["init_kwargs"]), tensors,
                               f"{path}: {header['class']}{header['init_kwargs']}")
    except EDMPickleError as e:
        raise ValueError(str(e)) from e
    net._d2o_init = (header["class"], dict(header["init_kwargs"]))
    net.d2o_extra = header.get("extra", {})
    return net.eval().requires_grad_(False).to(device)


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def load_network(path: str | os.PathLike, key: str = "ema", device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a network from either format, decided by content: project `.safetensors` or EDM pickle (`data[key]`)."""
    path = Path(path)
    if _is_safetensors(path):
        return load_model(path, device=device)
    with open(path, "rb") as f:
        if f.read(1) != b"\x80":
            raise ValueError(f"{path}: neither a d2o .safetensors model nor a pickle (first byte is not 0x80)")
    data = load_edm_pickle(path)
    if not isinstance(data.get(key), torch.nn.Module):
        raise EDMPickleError(f"{path}: key {key!r} is not a network (keys: {sorted(data)})")
    return data[key].to(device)


def convert_edm_pickle(src_pkl: str | os.PathLike, dst: str | os.PathLike, key: str = "ema",
                       extra: dict | None = None) -> Path:
    """Convert `src_pkl[key]` to the project format at `dst`; `extra` records provenance (sha256 of the source...)."""
    net = load_network(src_pkl, key=key)
    info = {"source_checkpoint": str(src_pkl), "source_key": key, **dict(extra or {})}
    return save_model(net, dst, extra=info)
