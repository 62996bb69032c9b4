"""Safe reading of EDM training pickles (network-snapshot-*.pkl) without running any code they carry.

EDM [EDM:training/training_loop.py] saves `dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)` with
plain `pickle.dump`. Every persistent object [EDM:torch_utils/persistence.py] is pickled as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = dict(type='class', version=6, module_src=<source of its module>, class_name=<bare name>, state=<__dict__>)`;
EDM's own loader `exec`s `module_src`. Here `module_src` is never looked at: `class_name` is mapped through
`d2o.edm.networks.EDM_CLASS_MAP` to the project's re-implementation, which is built from the pickled
`_init_args`/`_init_kwargs`, and the pickled parameters/buffers (collected from the nested states by name) are put
into it with strict name, shape and dtype checks (facts sheet §1.1).

Tensors inside a plain pickle are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, with each
storage `torch.storage._load_from_bytes(b)` where `b` is a legacy (non-zip) `torch.save` of that storage. The
unpickler below reads such payloads itself: it parses the small header with a restricted unpickler and reads the raw
data straight into an aligned tensor, so the weights are read from disk once and never copied afterwards.

Only an explicit allow-list of globals can be named by the stream; anything else raises `UnsafePickleError` before
the object is looked up, so e.g. `os.system` or `builtins.eval` are never even imported.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_edm_pickle", "UnsafePickleError", "EDMPickleError", "PersistentRecord", "UNMODELLED_CLASSES"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it could run code on load)."""


class EDMPickleError(ValueError):
    """The file is not a readable EDM pickle, or its contents do not match the project's networks."""


# EDM classes that the project does not model; returned as plain records (facts sheet §1.1: D2O reads only `ema`).
UNMODELLED_CLASSES = ("EDMLoss", "VPLoss", "VELoss", "AugmentPipe")

_PERSISTENCE_VERSION = 6  # torch_utils.persistence._version in every released EDM
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER of the legacy torch.save format
_LEGACY_MAGIC_PICKLE = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little") + b"."
_HEAD_BYTES = 4096  # legacy header (magic, version, sys_info, storage id, keys) is ~300 bytes
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


# ----------------------------------------------------------------------------------------------------------------
# Stand-ins produced by the unpickler.

class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` yields here: the class name and pickled state, nothing executed."""

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __repr__(self):
        return f"PersistentRecord({self.class_name!r})"


class TorchModuleRecord:
    """State of a non-persistent torch container (EDM uses `torch.nn.ModuleDict`), filled by pickle's BUILD."""

    torch_name = "torch.nn.modules.module.Module"
    state = None  # set by BUILD

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise EDMPickleError(f"state of {self.torch_name} is {type(state).__name__}, expected dict")
        self.state = state


_TORCH_CONTAINERS = {
    name: type(name.rsplit(".", 1)[1] + "Record", (TorchModuleRecord,), {"torch_name": name})
    for name in ("torch.nn.modules.container.ModuleDict", "torch.nn.modules.container.ModuleList",
                 "torch.nn.modules.container.Sequential", "torch.nn.modules.module.Module")
}


class _LegacyStorage:
    """A storage read from a legacy `torch.save` payload: its dtype and raw bytes as an aligned uint8 tensor."""

    def __init__(self, dtype: torch.dtype, data: torch.Tensor):
        self.dtype, self.data = dtype, data


# ----------------------------------------------------------------------------------------------------------------
# Safe re-implementations of the functions EDM pickles call.

def _reconstruct_persistent_obj(meta):
    """Replacement for `torch_utils.persistence._reconstruct_persistent_obj`: validate `meta`, ignore `module_src`."""
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("state"), dict):
        raise EDMPickleError(f"malformed persistent object meta: {type(meta).__name__} with keys "
                             f"{sorted(meta) if isinstance(meta, dict) else '-'}")
    if meta.get("type") != "class" or meta.get("version") != _PERSISTENCE_VERSION:
        raise EDMPickleError(f"persistent object {meta['class_name']!r} has type={meta.get('type')!r} "
                             f"version={meta.get('version')!r}; only type='class', version={_PERSISTENCE_VERSION} "
                             "(every released EDM) is supported")
    return PersistentRecord(meta["class_name"], meta["state"])


class _HeaderUnpickler(pickle.Unpickler):
    """Reads the small pickles at the start of a legacy storage payload; only storage types may be named."""

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise UnsafePickleError(f"{module}.{name} is not allowed in a storage payload")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise EDMPickleError(f"unexpected persistent id in a storage payload: {pid!r}")
        return pid


def _parse_legacy_header(head: bytes):
    """Parse the header of a legacy `torch.save(storage)` payload -> (dtype, numel, data_offset), or None if cut."""

    f = io.BytesIO(head)
    try:
        up = _HeaderUnpickler(f)
        magic, version, sys_info = up.load(), up.load(), up.load()
        pid, keys = up.load(), up.load()
        numel_raw = f.read(8)
    except (EOFError, pickle.UnpicklingError, IndexError) as e:
        if isinstance(e, UnsafePickleError):
            raise
        return None
    if len(numel_raw) < 8:
        return None
    if magic != _LEGACY_MAGIC or version != 1001:
        raise EDMPickleError(f"storage payload has magic {magic!r}, version {version!r}; not a legacy torch.save")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise EDMPickleError("storage payload was written on a big-endian machine; not supported")
    if not isinstance(pid, tuple) or pid[5:6] not in ((), (None,)) or keys != [pid[2]]:
        raise EDMPickleError("storage payload holds a storage view or several storages; not an EDM tensor storage")
    (numel,) = struct.unpack("<q", numel_raw)
    if numel != pid[4]:
        raise EDMPickleError(f"storage payload declares {pid[4]} elements but stores {numel}")
    return pid[1], numel, f.tell()


def _storage_from_bytes(b: bytes) -> _LegacyStorage:
    parsed = _parse_legacy_header(b[:_HEAD_BYTES]) or _parse_legacy_header(b)
    if parsed is None:
        raise EDMPickleError("storage payload is truncated")
    dtype, numel, off = parsed
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    if off + nbytes != len(b):
        raise EDMPickleError(f"storage payload has {len(b) - off} data bytes, expected {nbytes}")
    data = torch.empty(nbytes, dtype=torch.uint8)
    data.numpy()[:] = np.frombuffer(b, dtype=np.uint8, count=nbytes, offset=off)
    return _LegacyStorage(dtype, data)


def _load_from_bytes(b):
    """Replacement for `torch.storage._load_from_bytes`: the unpickler already turned payloads into storages."""
    if isinstance(b, _LegacyStorage):
        return b
    if isinstance(b, (bytes, bytearray)):
        return _storage_from_bytes(bytes(b))
    raise EDMPickleError(f"_load_from_bytes called with {type(b).__name__}")


def _tensor_on(storage, offset, size, stride, dtype=None):
    if not isinstance(storage, _LegacyStorage):
        raise EDMPickleError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise EDMPickleError(f"tensor dtype is {dtype!r}")
    try:
        t = torch.empty(0, dtype=dtype)
        return t.set_(storage.data.untyped_storage(), int(offset), tuple(size), tuple(stride))
    except (RuntimeError, TypeError, ValueError) as e:
        raise EDMPickleError(f"tensor (offset {offset}, size {size}, stride {stride}) does not fit its storage: {e}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Replacement for `torch._utils._rebuild_tensor_v2`: a view of the already-read storage (no copy)."""
    return _tensor_on(storage, storage_offset, size, stride).requires_grad_(bool(requires_grad))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    """Replacement for `torch._utils._rebuild_tensor_v3` (untyped storage plus explicit dtype)."""
    return _tensor_on(storage, storage_offset, size, stride, dtype).requires_grad_(bool(requires_grad))


def _rebuild_parameter(data, requires_grad, backward_hooks=None, state=None):
    """Replacement for `torch._utils._rebuild_parameter(_with_state)`; Python-level state is dropped."""
    if not isinstance(data, torch.Tensor):
        raise EDMPickleError(f"parameter rebuilt from {type(data).__name__}")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _rebuild_from_type_v2(func, new_type, args, state):
    """Replacement for `torch._tensor._rebuild_from_type_v2`, limited to plain tensors and parameters."""
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter) or new_type not in _TENSOR_TYPES:
        raise UnsafePickleError(f"_rebuild_from_type_v2 with {getattr(func, '__name__', func)!r}, {new_type!r}")
    t = func(*args)
    return torch.nn.Parameter(t, t.requires_grad) if new_type is torch.nn.Parameter and not isinstance(t, torch.nn.Parameter) else t


def _numpy_reconstruct(subtype, shape, dtype):
    """Replacement for `numpy.core.multiarray._reconstruct`; only plain ndarrays."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    """Replacement for `numpy.core.multiarray.scalar`; numeric dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _codecs_encode(text, encoding="utf-8"):
    """Replacement for `_codecs.encode`, used by protocol <3 to store bytes; latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _copyreg_reconstructor(cls, base, state):
    """Replacement for `copyreg._reconstructor` (protocol 0/1 objects); stand-in records and dicts only."""
    if base is object and isinstance(cls, type) and issubclass(cls, TorchModuleRecord) and state is None:
        return cls()
    if base is dict and cls is dict:
        return dict(state or {})
    raise UnsafePickleError(f"copyreg._reconstructor({cls!r}, {base!r})")


_ALLOWED = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytearray": bytearray,
    "builtins.slice": slice, "builtins.complex": complex, "builtins.object": object, "builtins.dict": dict,
    "builtins.list": list, "builtins.tuple": tuple, "builtins.int": int, "builtins.float": float,
    "builtins.str": str, "builtins.bytes": bytes, "builtins.bool": bool,
    "_codecs.encode": _codecs_encode,
    "copyreg._reconstructor": _copyreg_reconstructor,
    "dnnlib.util.EasyDict": dict,
    "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
    "torch.storage._load_from_bytes": _load_from_bytes,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch._tensor.Tensor": torch.Tensor, "torch.Tensor": torch.Tensor,
    "torch.nn.parameter.Parameter": torch.nn.Parameter,
    "torch.device": torch.device,
    "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype,
    **{f"numpy.dtypes.{n}": getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")},
    **{f"{m}._reconstruct": _numpy_reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{f"{m}.scalar": _numpy_scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{f"torch.{n}": getattr(torch, n) for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)},
    **_TORCH_CONTAINERS,
}
# BUILD (setstate) is only allowed on these types; anything else could be a callable the stream wants to patch.
_BUILDABLE = (TorchModuleRecord, np.ndarray, np.dtype, collections.OrderedDict)


# ----------------------------------------------------------------------------------------------------------------
# The unpickler.

def _read_binbytes(self, n: int):
    """Read a length-`n` bytes opcode; legacy storage payloads go straight into an aligned tensor (no copy later)."""
    head = self.read(min(n, _HEAD_BYTES))
    if len(head) < min(n, _HEAD_BYTES):
        raise EOFError("pickle data was truncated")
    parsed = _parse_legacy_header(head) if head.startswith(_LEGACY_MAGIC_PICKLE) else None
    if parsed is None:  # ordinary bytes (or a header longer than _HEAD_BYTES: parsed later from the full bytes)
        rest = self.read(n - len(head))
        if len(rest) < n - len(head):
            raise EOFError("pickle data was truncated")
        self.append(head + rest)
        return
    dtype, numel, off = parsed
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    if off + nbytes != n:
        raise EDMPickleError(f"storage payload has {n - off} data bytes, expected {nbytes}")
    data = torch.empty(nbytes, dtype=torch.uint8)
    view = memoryview(data.numpy()).cast("B")
    got = min(len(head) - off, nbytes)
    view[:got] = head[off:off + got]
    frame = self._unframer.current_frame
    if self._file_readinto is None or (frame is not None and frame.tell() < len(frame.getbuffer())):
        got += self.readinto(view[got:])
    while got < nbytes:  # payloads outside frames (all large ones): read from the file straight into the tensor
        k = self._file_readinto(view[got:])
        if not k:
            raise EOFError("pickle data was truncated")
        got += k
    self.append(_LegacyStorage(dtype, data))


class SafeUnpickler(pickle._Unpickler):
    """Pure-Python unpickler (it lets us read storage payloads in place) with an allow-list `find_class`."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source: str = "<stream>"):
        super().__init__(file)
        self.source = source
        self._file_readinto = getattr(file, "readinto", None)

    def find_class(self, module, name):
        if self.proto < 3:  # protocol 0-2 streams use Python 2 names (e.g. __builtin__)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _ALLOWED.get(f"{module}.{name}")
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{module}.{name}' (not in the allow-list of "
                "d2o.edm.persistence; loading it could run arbitrary code). Only EDM and StyleGAN2-ADA training pickles are supported.")
        return obj

    def load_binbytes(self):
        _read_binbytes(self, struct.unpack("<I", self.read(4))[0])
    dispatch[pickle.BINBYTES[0]] = load_binbytes

    def load_binbytes8(self):
        _read_binbytes(self, struct.unpack("<Q", self.read(8))[0])
    dispatch[pickle.BINBYTES8[0]] = load_binbytes8

    def load_build(self):
        inst = self.stack[-2]  # stack: ..., inst, state
        if not isinstance(inst, _BUILDABLE):
            raise UnsafePickleError(f"{self.source}: refusing BUILD (setstate) on {type(inst).__module__}."
                                    f"{type(inst).__qualname__}")
        pickle._Unpickler.load_build(self)
    dispatch[pickle.BUILD[0]] = load_build


# ----------------------------------------------------------------------------------------------------------------
# From records to project modules.

def _children(state: dict, where: str) -> dict:
    mods = state.get("_modules", {})
    if not isinstance(mods, dict):
        raise EDMPickleError(f"{where}: _modules is {type(mods).__name__}")
    return mods


def collect_tensors(rec, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten parameters and persistent buffers of a record tree into state_dict names (as `Module.state_dict`)."""
    out = {}
    state = rec.state or {}
    skip = set(state.get("_non_persistent_buffers_set", ()))
    for field in ("_parameters", "_buffers"):
        for name, t in (state.get(field) or {}).items():
            if t is None or (field == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise EDMPickleError(f"{prefix}{name}: {field} entry is {type(t).__name__}, expected a tensor")
            out[prefix + name] = t.detach() if not isinstance(t, torch.nn.Parameter) else t.data
    for name, child in _children(state, prefix or "<root>").items():
        if child is None:
            continue
        if not isinstance(child, (PersistentRecord, TorchModuleRecord)):
            raise EDMPickleError(f"{prefix}{name}: submodule is {type(child).__name__}")
        out.update(collect_tensors(child, f"{prefix}{name}."))
    return out


def _class_map() -> dict[str, type]:
    from d2o.edm.networks import EDM_CLASS_MAP
    return {key.rsplit(".", 1)[-1]: cls for key, cls in EDM_CLASS_MAP.items()}


def _meta_tensors(net: torch.nn.Module) -> list[str]:
    return [f"{mname}.{k}" for mname, m in net.named_modules() for k, v in vars(m).items()
            if isinstance(v, torch.Tensor) and v.is_meta] + \
           [n for n, t in net.state_dict(keep_vars=True).items() if t.is_meta]


_META_MIN_NUMEL = 1 << 24  # above this many weights, build on the meta device without init (no copy, no arithmetic)


def instantiate_with(factory, tensors: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """`factory()` with `tensors` assigned as its state (strict names, shapes and dtypes; no copy of the weights).

    Large networks are built on the meta device, so no random init and no second copy of the weights is ever
    allocated; if the class keeps plain tensor attributes made at init, it is rebuilt on CPU instead.
    """
    big = sum(t.numel() for t in tensors.values()) >= _META_MIN_NUMEL
    if big:
        from d2o.edm.networks import skip_init

        with torch.device("meta"), skip_init():
            net = factory()
    else:
        net = factory()
    expected = net.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [f"{n}: file {tuple(tensors[n].shape)} {tensors[n].dtype} vs model {tuple(t.shape)} {t.dtype}"
           for n, t in expected.items() if n in tensors and (tensors[n].shape != t.shape or tensors[n].dtype != t.dtype)]
    if missing or unexpected or bad:
        raise EDMPickleError(
            f"{what}: weights do not match the network: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''} ({len(unexpected)}), "
            f"shape/dtype mismatches {bad[:8]} ({len(bad)})")
    net.load_state_dict(tensors, strict=True, assign=True)
    if big and _meta_tensors(net):
        net = factory()
        net.load_state_dict(tensors, strict=True, assign=True)
    return net


def build_from_record(rec: PersistentRecord, cls: type, source: str = "<record>") -> torch.nn.Module:
    """Build `cls(**pickled init kwargs)` and put the record's tensors into it (see `instantiate_with`)."""
    args, kwargs = rec.state.get("_init_args", ()), rec.state.get("_init_kwargs")
    if kwargs is None or args:
        raise EDMPickleError(f"{source}: {rec.class_name} was pickled with init args {args!r} / kwargs {kwargs!r}; "
                             "keyword-only init kwargs are required to rebuild it")
    kwargs = dict(kwargs)

    def factory():
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise EDMPickleError(f"{source}: cannot build {cls.__name__} from the pickled init kwargs {kwargs}: {e}") from e

    net = instantiate_with(factory, collect_tensors(rec), f"{source}: {rec.class_name} -> {cls.__module__}."
                                                          f"{cls.__name__}{kwargs}")
    net.eval().requires_grad_(False)
    net._d2o_init = (cls.__name__, kwargs)
    return net


def _as_record(rec: PersistentRecord, source: str) -> dict:
    """Plain record of a persistent object the project does not model: class name, init kwargs, attributes, tensors."""
    state = rec.state
    attrs = {k: _materialize(v, None, source) for k, v in state.items()
             if not k.startswith("_") and not isinstance(v, torch.Tensor)}
    is_module = "_parameters" in state
    tensors = collect_tensors(rec) if is_module else {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return dict(class_name=rec.class_name, init_args=tuple(state.get("_init_args") or ()),
                init_kwargs=dict(state.get("_init_kwargs") or {}), attributes=attrs, tensors=tensors)


def _materialize(obj, class_map, source):
    if isinstance(obj, PersistentRecord):
        cls = (class_map or {}).get(obj.class_name)
        return build_from_record(obj, cls, source) if cls is not None else _as_record(obj, source)
    if isinstance(obj, TorchModuleRecord):
        return {"class_name": obj.torch_name, "attributes": {}, "tensors": collect_tensors(obj)}
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v, class_map, source)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, class_map, source) for v in obj)
    return obj


def read_pickle_records(path: str | os.PathLike):
    """Unpickle `path` with the allow-list unpickler; persistent objects stay `PersistentRecord`s."""
    path = Path(path)
    try:
        with open(path, "rb", buffering=1 << 20) as f:
            return SafeUnpickler(f, source=str(path)).load()
    except UnsafePickleError:
        raise
    except EDMPickleError as e:
        raise EDMPickleError(f"{path}: {e}") from e
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, KeyError, IndexError, TypeError) as e:
        size = path.stat().st_size
        raise EDMPickleError(f"{path}: not a complete EDM pickle ({size} bytes; {type(e).__name__}: {e}). The file is "
                             "truncated or corrupt: delete it and download it again (d2o.download verifies SHA-256).") from e


def load_edm_pickle(path: str | os.PathLike, class_map: dict[str, type] | None = None) -> dict:
    """Read an EDM training pickle without executing code from it.

    Returns the pickled dict with `ema` (and any other persistent network) as a project `nn.Module` (CPU, eval mode,
    requires_grad False, `_d2o_init` set), unmodelled persistent objects (`EDMLoss`, `AugmentPipe`) as plain record
    dicts, and `dataset_kwargs` as a dict. `class_map` maps EDM class names (bare or `training.networks.X`) to
    project classes; default `d2o.edm.networks.EDM_CLASS_MAP`.
    """
    data = read_pickle_records(path)
    if not isinstance(data, dict):
        raise EDMPickleError(f"{path}: top level is {type(data).__name__}, expected EDM's dict(ema=..., ...)")
    class_map = _class_map() if class_map is None else {k.rsplit(".", 1)[-1]: v for k, v in class_map.items()}
    for name in UNMODELLED_CLASSES:
        class_map.pop(name, None)
    ema = data.get("ema")
    if isinstance(ema, PersistentRecord) and ema.class_name not in class_map:
        raise EDMPickleError(f"{path}: 'ema' is an EDM {ema.class_name!r}, which d2o.edm.networks does not model "
                             f"(known: {sorted(class_map)})")
    return {k: _materialize(v, class_map, str(path)) for k, v in data.items()}
