"""Pretrained ImageNet class embedding of D2O's conditional discriminator heads (spec §3.4).

D2O (pg_modules/discriminator.py, `SingleDiscCond`) loads `in_embeddings/tf_efficientnet_lite0.pkl` (StyleGAN-XL's
file) once per conditional mini-discriminator with a plain `pickle.Unpickler(f).load()['embed']`: every head gets its
own copy of a `torch.nn.Embedding(1000, 320)`, trained with the head. Its `c_dim` argument is never used, so the
embedding keeps all 1000 rows whatever the dataset; a C-class experiment indexes it with argmax of the one-hot label,
i.e. uses rows 0..C-1 (CIFAR-10: ImageNet rows 0-9; ImageNet: all rows).

File format (checked on the file in Zyriix/D2O, 1,280,990 bytes, sha256 c109f9a8...cf2c6): pickle protocol 3 of
`{'embed': <Embedding>}`, written with dill. The Embedding is pickled as NEWOBJ of
`torch.nn.modules.sparse.Embedding` with no arguments, then BUILD with its `__dict__`: `training`, `_parameters`
(an `OrderedDict` holding `weight` = `torch._utils._rebuild_parameter(torch._utils._rebuild_tensor_v2(
torch.storage._load_from_bytes(<legacy torch.save of a float32 storage>), 0, (1000, 320), (320, 1), False,
OrderedDict()), True, OrderedDict())`), empty `OrderedDict`s of buffers/hooks/modules, `_non_persistent_buffers_set`
= `dill._dill._load_type('set')([])`, and `num_embeddings` 1000, `embedding_dim` 320, `padding_idx` None,
`max_norm` None, `norm_type` 2.0, `scale_grad_by_freq` False, `sparse` False.

`read_class_embedding_pickle` reads such a file without executing anything from it: the allow-list unpickler of
`d2o.edm.persistence` (which reads the storage payload straight into a tensor), restricted here to exactly the six
globals above; `dill._dill._load_type` is replaced by a function that only knows 'set', the Embedding by a plain
record. Anything else is refused (`UnsafePickleError`, naming the file and the global) before it is looked up.
`convert_class_embedding` stores the matrix as safetensors (tensor "weight", metadata with the source's sha256),
the format `ProjectedDiscriminator.load_class_embedding` reads.
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import os
import pickle
import struct
from pathlib import Path

import torch

from d2o.edm.persistence import (EDMPickleError, SafeUnpickler, TorchModuleRecord, UnsafePickleError,
                                 _load_from_bytes, _rebuild_parameter, _rebuild_tensor_v2, collect_tensors)

__all__ = ["read_class_embedding_pickle", "convert_class_embedding", "load_class_embedding_file",
           "ClassEmbeddingError", "UnsafePickleError", "EMBED_SHAPE", "FORMAT"]

EMBED_SHAPE = (1000, 320)  # StyleGAN-XL / D2O: 1000 ImageNet classes x 320 (tf_efficientnet_lite0's last width)
FORMAT = "d2o.class_embedding/1"


class ClassEmbeddingError(ValueError):
    """The file is not a readable class-embedding file of the expected format, shape or dtype."""


class EmbeddingRecord(TorchModuleRecord):
    """What NEWOBJ + BUILD of `torch.nn.modules.sparse.Embedding` yields here: its pickled `__dict__`, nothing run."""

    torch_name = "torch.nn.modules.sparse.Embedding"


def _dill_load_type(name):
    """Replacement for `dill._dill._load_type(name)`, which maps a type name to a builtin type; only 'set' is used."""
    if name != "set":
        raise UnsafePickleError(f"dill._dill._load_type({name!r}) is not allowed (only 'set')")
    return set


_GLOBALS = {
    "torch.nn.modules.sparse.Embedding": EmbeddingRecord,
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch.storage._load_from_bytes": _load_from_bytes,
    "dill._dill._load_type": _dill_load_type,
}


class _EmbeddingUnpickler(SafeUnpickler):
    """d2o.edm.persistence's unpickler (in-place storage reads, BUILD only on records) with the six globals above."""

    def find_class(self, module, name):
        if self.proto < 3 and (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        obj = _GLOBALS.get(f"{module}.{name}")
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{module}.{name}' (not one of the {len(_GLOBALS)} globals a "
                f"StyleGAN-XL/D2O class-embedding pickle uses: {sorted(_GLOBALS)}; loading it could run code)")
        return obj


def _fail(path, msg: str) -> ClassEmbeddingError:
    return ClassEmbeddingError(f"d2o.class_embedding: {path}: {msg}")


def read_class_embedding_pickle(path: str | os.PathLike, shape: tuple[int, int] = EMBED_SHAPE,
                                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (1000, 320) float32 embedding matrix of a StyleGAN-XL/D2O `in_embeddings/*.pkl`, read without executing
    code from the file (see the module docstring). Raises `UnsafePickleError` for any other global and
    `ClassEmbeddingError` for anything that is not such an embedding (module attributes, shape, dtype)."""
    path = Path(path)
    try:
        with open(path, "rb", buffering=1 << 20) as f:
            data = _EmbeddingUnpickler(f, source=str(path)).load()
    except UnsafePickleError:
        raise
    except (EDMPickleError, EOFError, pickle.UnpicklingError, struct.error, ValueError, KeyError, IndexError,
            TypeError, AttributeError) as e:
        raise _fail(path, f"not a readable class-embedding pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or set(data) != {"embed"}:
        raise _fail(path, f"top level is {type(data).__name__}"
                          f"{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}, expected {{'embed': "
                          f"Embedding}}")
    rec = data["embed"]
    if not isinstance(rec, EmbeddingRecord) or not isinstance(rec.state, dict):
        raise _fail(path, f"'embed' is {type(rec).__name__}, expected a pickled torch.nn.Embedding")
    state = rec.state
    expected = dict(num_embeddings=shape[0], embedding_dim=shape[1], padding_idx=None, max_norm=None,
                    scale_grad_by_freq=False, sparse=False)
    wrong = {k: state.get(k, "<missing>") for k, v in expected.items() if state.get(k, "<missing>") != v}
    if wrong:  # e.g. a padding row or max_norm renormalisation would change what the heads compute
        raise _fail(path, f"Embedding attributes {wrong} differ from the expected {expected}")
    try:
        tensors = collect_tensors(rec)
    except EDMPickleError as e:
        raise _fail(path, str(e)) from e
    if set(tensors) != {"weight"}:
        raise _fail(path, f"Embedding holds tensors {sorted(tensors)}, expected only 'weight'")
    w = tensors["weight"]
    if tuple(w.shape) != tuple(shape) or w.dtype != dtype:
        raise _fail(path, f"embedding weight is {tuple(w.shape)} {w.dtype}, expected {tuple(shape)} {dtype}")
    if not torch.isfinite(w).all():
        raise _fail(path, "embedding weight has non-finite values")
    return w.detach().clone(memory_format=torch.contiguous_format)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_class_embedding(src_pkl: str | os.PathLike, dst_safetensors: str | os.PathLike,
                            extra: dict | None = None) -> dict:
    """Read `src_pkl` with `read_class_embedding_pickle` and write `dst_safetensors` (one tensor "weight", metadata
    `format`, `source_name`, `source_sha256`, `shape`, `dtype` and the str -> str entries of `extra`); written to a
    temporary name and renamed. Returns the metadata."""
    src, dst = Path(src_pkl), Path(dst_safetensors)
    weight = read_class_embedding_pickle(src)
    meta = dict(format=FORMAT, source_name=src.name, source_sha256=_sha256(src),
                shape="x".join(map(str, weight.shape)), dtype=str(weight.dtype).removeprefix("torch."))
    for k, v in (extra or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"d2o.class_embedding: extra metadata must map str to str, got {k!r}: {v!r}")
        if k in meta:
            raise ValueError(f"d2o.class_embedding: extra metadata key {k!r} is reserved")
        meta[k] = v
    import safetensors.torch

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    safetensors.torch.save_file({"weight": weight}, str(tmp), metadata=meta)
    os.replace(tmp, dst)
    return meta


def load_class_embedding_file(path: str | os.PathLike) -> torch.Tensor:
    """The embedding matrix stored in `path`: a `convert_class_embedding` safetensors file (tensor "weight"), a
    StyleGAN-XL/D2O `.pkl` (read with `read_class_embedding_pickle`), or a `torch.save`d tensor or dict with key
    'weight' / 'embed.weight' (read with weights_only=True). Shape checks are left to the caller."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"d2o.class_embedding: class-embedding file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            if "weight" not in f.keys():
                raise _fail(path, f"holds tensors {sorted(f.keys())}, expected 'weight'")
            return f.get_tensor("weight")
    if path.suffix == ".pkl":
        return read_class_embedding_pickle(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj.get("weight", obj.get("embed.weight"))
    if not isinstance(obj, torch.Tensor):
        raise _fail(path, "must hold a tensor or a dict with 'weight' or 'embed.weight'")
    return obj
