"""Parameters and buffers of a TorchScript archive, read without `torch.jit.load`.

A TorchScript archive (`torch.jit.save`; e.g. OpenAI's released CLIP `ViT-B-32.pt`, which torch-fidelity loads with
`torch.jit.load`) is a zip whose records share one top-level folder `<name>/`:

    <name>/data.pkl             pickle (protocol 2) of the module tree: each module an instance of a class
                                `__torch__.<qualified.name>` rebuilt by NEWOBJ + BUILD from a dict of its attributes
                                in slot order (`training`, submodules, parameters, buffers, plain values); every tensor
                                is `torch._utils._rebuild_tensor_v2(<persistent id>, offset, size, stride, ...)` with
                                the persistent id ('storage', torch.<Type>Storage, key, location, numel)
    <name>/data/<key>           raw bytes of storage <key>, in the byte order named by <name>/byteorder (little if
                                absent)
    <name>/code/__torch__/...   the classes' TorchScript source, one file per Python module path
    <name>/constants.pkl, constants/, version, *.debug_pkl, ...   not needed for the state

`torch.jit.load` compiles and runs that code, and `torch.load(weights_only=False)` would run whatever callable the
pickle names, so a downloaded archive is read here with an allow-listed unpickler instead: `__torch__.*` classes become
inert `ScriptObject` stand-ins recording their state, tensors are rebuilt from the zip's storage records, and any other
global (`os.system`, `builtins.eval`, ...) is refused before it is called.

Which tensor attributes are parameters and buffers is not in the pickle (a parameter, a buffer and a plain tensor
attribute are pickled alike; `requires_grad` is only a hint). TorchScript declares it in each module class's source:
`__parameters__ = ["weight", "bias", ]` and `__buffers__ = [...]` lines (a class is a module when its header reads
`class Name(Module):`). Those two lines are read as list literals, never executed, and the state dict is assembled as
`RecursiveScriptModule.state_dict()` does: per module, its declared parameters then its declared buffers (attribute
order, None skipped), then its submodules recursively. Non-persistent buffers are declared like persistent ones (the
flag is lost on save), so they appear here exactly as in `torch.jit.load(path).state_dict()`; plain tensor attributes
and traced constants do not. `expected_keys` keeps only the named keys, fails if one is missing, and, for an archive
without class sources, is the rule itself (every tensor attribute of every module is then a candidate).
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ScriptObject", "TorchScriptReadError", "read_torchscript_state_dict"]


class TorchScriptReadError(ValueError):
    """A file that cannot be read as a TorchScript archive; the message names the file and the problem."""


class ScriptObject:
    """Inert stand-in for an instance of the TorchScript class `qualname`: holds only its pickled state."""

    qualname: str = ""
    state: Any = None

    def __setstate__(self, state: Any) -> None:  # BUILD
        self.state = state

    def __repr__(self) -> str:
        return f"<ScriptObject {self.qualname}>"


# ----------------------------------------------------------------------------------------------------------------------
# Storage types and allow-listed globals.

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128, "ComplexFloatStorage": torch.complex64,
}  # fmt: skip
# Dtypes newer than the legacy storage classes: the C++ pickler names them `torch.<ScalarType>Storage` as well.
for _name, _attr in [("ComplexHalf", "complex32"), ("UInt16", "uint16"), ("UInt32", "uint32"), ("UInt64", "uint64"),
                     ("Float8_e4m3fn", "float8_e4m3fn"), ("Float8_e5m2", "float8_e5m2"),
                     ("Float8_e4m3fnuz", "float8_e4m3fnuz"), ("Float8_e5m2fnuz", "float8_e5m2fnuz")]:  # fmt: skip
    if isinstance(getattr(torch, _attr, None), torch.dtype):
        _STORAGE_DTYPES[f"{_name}Storage"] = getattr(torch, _attr)


@dataclass(frozen=True, slots=True)  # slots: a pickled BUILD cannot rewrite it
class _StorageType:
    name: str
    dtype: torch.dtype


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: torch.dtype
    data: torch.UntypedStorage


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:  # fmt: skip
    """Stand-in for `torch._utils._rebuild_tensor_v2`: a view of a storage read from the zip; hooks, flags dropped."""
    if not isinstance(storage, _Storage):
        raise TypeError(f"_rebuild_tensor_v2 applied to {type(storage).__name__}, not a storage record")
    if not (isinstance(offset, int) and _is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
        raise TypeError(f"_rebuild_tensor_v2 with malformed offset/size/stride {offset!r}, {size!r}, {stride!r}")
    try:  # set_ checks that the view fits in the storage
        return torch.empty(0, dtype=storage.dtype).set_(storage.data, offset, size, stride)
    except RuntimeError as e:
        raise TypeError(f"size {tuple(size)} at offset {offset} does not fit storage {storage.key}: {e}") from e


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"_rebuild_parameter applied to {type(data).__name__}")
    return data


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, tuple | list) and all(isinstance(v, int) for v in x)


def _identity(value: Any, *_: Any) -> Any:
    return value


def _device(spec: Any) -> torch.device:
    if not isinstance(spec, str | int):
        raise TypeError(f"torch.device({spec!r})")
    return torch.device(spec)


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, int | float) for v in (real, imag)):
        raise TypeError(f"complex({real!r}, {imag!r})")
    return complex(real, imag)


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,  # backward-hooks argument of every tensor
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "restore_type_tag"): _identity,  # (value, "List[int]") -> value
    ("torch", "device"): _device,
    ("builtins", "complex"): _complex,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: str, load_storage: Callable[[_StorageType, str, int], _Storage]) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path
        self._load_storage = load_storage
        self._classes: dict[str, type[ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname, "__module__": __name__})
            return self._classes[qualname]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        raise TorchScriptReadError(
            f"{self._path}: data.pkl refers to the global {module}.{name}, which is not allowed in a TorchScript "
            "module's state (only __torch__.* classes, tensors, storages and containers are); refusing to load it"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchScriptReadError(f"{self._path}: data.pkl has an unsupported persistent id {pid!r:.200}")
        _, stype, key, _location, numel = pid  # location ignored: everything is read to the CPU
        if not (isinstance(stype, _StorageType) and isinstance(key, str) and isinstance(numel, int) and numel >= 0):
            raise TorchScriptReadError(f"{self._path}: data.pkl has a malformed storage record {pid!r:.200}")
        return self._load_storage(stype, key, numel)


# ----------------------------------------------------------------------------------------------------------------------
# Class declarations from code/.


@dataclass
class _ClassDecl:
    is_module: bool
    parameters: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)


_CLASS_RE = re.compile(r"class\s+(\w+)\s*(?:\(\s*([\w.]*)\s*\))?\s*:")
_DECL_RE = re.compile(r"\s+__(parameters|buffers)__\s*=\s*(\[.*\])\s*$")


def _parse_class_decls(source: str, module: str, where: str) -> dict[str, _ClassDecl]:
    """Top-level `class X(Module):` headers and their `__parameters__`/`__buffers__` list literals, line by line."""
    decls: dict[str, _ClassDecl] = {}
    current: _ClassDecl | None = None
    for line in source.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():  # a top-level statement ends the previous class body
            m = _CLASS_RE.match(line)
            current = None
            if m:
                current = decls[f"{module}.{m.group(1)}"] = _ClassDecl(is_module=m.group(2) == "Module")
            continue
        m = _DECL_RE.match(line)
        if current is not None and m:
            try:
                names = ast.literal_eval(m.group(2))
            except (ValueError, SyntaxError) as e:
                raise TorchScriptReadError(f"{where}: unreadable __{m.group(1)}__ declaration {line.strip()!r}") from e
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise TorchScriptReadError(f"{where}: __{m.group(1)}__ is not a list of names: {line.strip()!r}")
            getattr(current, m.group(1)).extend(names)
    return decls


# ----------------------------------------------------------------------------------------------------------------------


def read_torchscript_state_dict(
    path: str | os.PathLike[str], expected_keys: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the TorchScript archive at `path`, as `torch.jit.load(path).state_dict()` names them.

    CPU tensors of the stored dtypes, in state-dict order; tensors sharing a storage in the archive share it here.
    `expected_keys`: keep only these keys (error naming any that are absent); required for archives without class
    sources. Raises `TorchScriptReadError` naming the file for anything that is not a readable TorchScript archive.
    """
    where = os.fspath(path)
    try:
        zf = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, OSError) as e:
        if isinstance(e, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise TorchScriptReadError(f"{where}: not a TorchScript archive (not a readable zip file: {e})") from e
    with zf:
        return _read(zf, where, expected_keys)


def _read(zf: zipfile.ZipFile, where: str, expected_keys: Iterable[str] | None) -> dict[str, torch.Tensor]:
    names = zf.namelist()
    records = set(names)
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not pickles:
        legacy = any(n.endswith("/model.json") for n in names)
        legacy = " (a pre-1.4 archive with model.json, not supported)" if legacy else ""
        raise TorchScriptReadError(f"{where}: not a TorchScript archive: no <archive>/data.pkl record{legacy}")
    first = names[0].split("/", 1)[0]  # like torch's reader, the archive name is the first record's folder
    root = first if f"{first}/data.pkl" in records else pickles[0].split("/", 1)[0]
    if expected_keys is None and not any(n.startswith(f"{root}/code/") for n in names):
        raise TorchScriptReadError(
            f"{where}: no {root}/code/ records: a torch.save checkpoint rather than a TorchScript archive? "
            "(read it with torch.load(weights_only=True), or pass expected_keys)"
        )

    byteorder = "little"
    if f"{root}/byteorder" in records:
        byteorder = zf.read(f"{root}/byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchScriptReadError(f"{where}: unknown byte order {byteorder!r} in {root}/byteorder")

    storages: dict[str, _Storage] = {}

    def load_storage(stype: _StorageType, key: str, numel: int) -> _Storage:
        if key in storages:
            if storages[key].dtype != stype.dtype:
                raise TorchScriptReadError(f"{where}: storage {key} read as {storages[key].dtype} and {stype.dtype}")
            return storages[key]
        name = f"{root}/data/{key}"
        if "/" in key or ".." in key or name not in records:
            raise TorchScriptReadError(f"{where}: data.pkl refers to storage {key!r} but the record {name} is missing")
        itemsize = torch.empty(0, dtype=stype.dtype).element_size()
        size = zf.getinfo(name).file_size  # checked before reading: a corrupt record could claim any size
        if size != numel * itemsize:
            raise TorchScriptReadError(
                f"{where}: record {name} has {size} bytes, expected {numel} x {itemsize} for {stype.name}"
            )
        raw = bytearray(zf.read(name))
        data = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        if byteorder != sys.byteorder and itemsize > 1:
            unit = itemsize // 2 if stype.dtype.is_complex else itemsize  # real and imaginary parts swapped separately
            data = data.view(-1, unit).flip(1).reshape(-1)
        storages[key] = _Storage(key, stype.dtype, data.untyped_storage())
        return storages[key]

    unpickler = _Unpickler(zf.read(f"{root}/data.pkl"), where, load_storage)
    try:
        top = unpickler.load()
    except TorchScriptReadError:
        raise
    except Exception as e:  # malformed pickle, bad arguments to an allowed callable, ...
        raise TorchScriptReadError(f"{where}: {root}/data.pkl is not a readable TorchScript pickle: {e}") from e
    if not isinstance(top, ScriptObject):
        raise TorchScriptReadError(
            f"{where}: {root}/data.pkl holds a {type(top).__name__}, not a __torch__ module: not a TorchScript archive"
        )

    decls: dict[str, _ClassDecl] = {}
    parsed: set[str] = set()

    def decl_of(obj: ScriptObject) -> _ClassDecl | None:
        module = obj.qualname.rsplit(".", 1)[0]
        if module not in parsed:
            parsed.add(module)
            source = f"{root}/code/{module.replace('.', '/')}.py"
            if source in records:
                text = zf.read(source).decode("utf-8", "replace")
                decls.update(_parse_class_decls(text, module, f"{where}: {source}"))
        decl = decls.get(obj.qualname)
        if decl is None and expected_keys is None:
            raise TorchScriptReadError(
                f"{where}: no definition of class {obj.qualname} under {root}/code/, so its parameters and buffers "
                "are unknown (pass expected_keys to select tensors by name)"
            )
        return decl

    out: dict[str, torch.Tensor] = {}
    stack: list[int] = []  # ids of the modules being visited: a pickle can build a cycle

    def visit(obj: ScriptObject, prefix: str, decl: _ClassDecl | None) -> None:
        state = obj.state
        name_here = prefix.rstrip(".") or "<top>"
        if not isinstance(state, dict):
            raise TorchScriptReadError(
                f"{where}: module {name_here} ({obj.qualname}) has a custom pickled state ({type(state).__name__}), "
                "not an attribute dict; not supported"
            )
        if id(obj) in stack:
            raise TorchScriptReadError(f"{where}: module {name_here} ({obj.qualname}) contains itself")
        stack.append(id(obj))
        if decl is None:  # no class source (expected_keys given): every tensor attribute is a candidate
            groups = [("tensor", [n for n, v in state.items() if isinstance(v, torch.Tensor)])]
        else:  # declared parameters, then declared buffers, each in attribute order
            groups = []
            for kind, declared in (("parameter", set(decl.parameters)), ("buffer", set(decl.buffers))):
                if declared - state.keys():
                    absent = sorted(declared - state.keys())
                    raise TorchScriptReadError(f"{where}: {obj.qualname} declares {kind}s {absent} but lacks them")
                groups.append((kind, [n for n in state if n in declared]))
        for kind, names in groups:
            for n in names:
                value = state[n]
                if value is None:  # Linear(bias=False), MultiheadAttention.q_proj_weight, ...: not in the state dict
                    continue
                if not isinstance(value, torch.Tensor):
                    raise TorchScriptReadError(f"{where}: {kind} {prefix}{n} is a {type(value).__name__}, not a tensor")
                out[prefix + n] = value.detach()  # as state_dict(): no grad flag, no hooks
        for n, value in state.items():  # submodules, in attribute order
            if isinstance(value, ScriptObject):
                child = decl_of(value)
                if child is None or child.is_module:
                    visit(value, f"{prefix}{n}.", child)
        stack.pop()

    top_decl = decl_of(top)
    if top_decl is not None and not top_decl.is_module:
        raise TorchScriptReadError(f"{where}: the top-level object {top.qualname} is not a module")
    visit(top, "", top_decl)

    if expected_keys is None:
        return out
    wanted = list(expected_keys)
    missing = [k for k in wanted if k not in out]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise TorchScriptReadError(f"{where}: expected keys missing from the archive: {shown}")
    keep = set(wanted)
    return {k: v for k, v in out.items() if k in keep}
