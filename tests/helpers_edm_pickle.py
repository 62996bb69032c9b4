"""Write pickles in EDM's training-snapshot format without importing EDM (test and benchmark helper).

The stream is what `pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...))` produces in
EDM [EDM:training/training_loop.py, torch_utils/persistence.py]:
- every persistent object (EDMPrecond, SongUNet/DhariwalUNet, UNetBlock, Conv2d, Linear, GroupNorm, the embeddings,
  EDMLoss, AugmentPipe) is `REDUCE(torch_utils.persistence._reconstruct_persistent_obj, (meta,))` with
  `meta = dict(type='class', version=6, module_src=<str>, class_name=<bare name>, state=<the object's __dict__>)`;
- torch containers (EDM uses `torch.nn.ModuleDict` for `enc`/`dec`) are ordinary objects:
  `NEWOBJ(torch.nn.modules.container.ModuleDict)` + `BUILD(__dict__)`;
- parameters and buffers are real torch tensors, pickled by torch itself (`_rebuild_parameter`,
  `_rebuild_tensor_v2`, `torch.storage._load_from_bytes` of a legacy `torch.save` payload).
Globals from EDM's modules are written by name (GLOBAL / STACK_GLOBAL opcodes) by a pickler subclass, so neither
EDM nor any fake module has to be importable. `module_src` is a dummy string.
"""

from __future__ import annotations

import collections
import copyreg
import pickle
from pathlib import Path

import torch

DUMMY_MODULE_SRC = "# module source omitted by tests/helpers_edm_pickle.py\n"
_MODULE_FIELDS = ("training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_backward_pre_hooks",
                  "_backward_hooks", "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs",
                  "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
                  "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                  "_load_state_dict_post_hooks", "_modules")


def named_global(module: str, name: str) -> type:
    """A stand-in class that the writer pickles as the global `module.name`."""
    return type(name, (), {"_edm_global": (module, name), "__call__": None})


RECONSTRUCT = named_global("torch_utils.persistence", "_reconstruct_persistent_obj")


class EasyDict(dict):
    """Pickled as `dnnlib.util.EasyDict` (a dict subclass: NEWOBJ + SETITEMS)."""
    _edm_global = ("dnnlib.util", "EasyDict")

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (EasyDict,), None, None, iter(self.items())


class Persistent:
    """A persistent object: reduces to `_reconstruct_persistent_obj(meta)` exactly as EDM's decorator does."""

    def __init__(self, class_name: str, state: dict, module_src: str = DUMMY_MODULE_SRC):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return RECONSTRUCT, (self.meta,), None


class TorchObject:
    """A plain torch object (e.g. ModuleDict): `NEWOBJ(cls)` + `BUILD(state)`."""

    def __init__(self, module: str, name: str, state: dict):
        self.__class__ = type(name, (TorchObject,), {"_edm_global": (module, name)})
        self.state = state

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class EDMPickler(pickle._Pickler):
    """Pure-Python pickler that writes classes carrying `_edm_global` as that global name."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_type(self, obj):
        ref = obj.__dict__.get("_edm_global")
        if ref is None:
            return pickle._Pickler.save_type(self, obj)
        module, name = ref
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)
    dispatch[type] = save_type


def module_state(m: torch.nn.Module, tensors: dict, prefix: str, init_kwargs: dict, children: dict) -> dict:
    """`__dict__` of an nn.Module as EDM pickles it: the nn.Module fields, plain attributes, init args/kwargs."""
    state = {}
    for k, v in vars(m).items():
        if k in _MODULE_FIELDS or (not k.startswith("_") and isinstance(v, (int, float, str, bool, list, tuple, type(None)))):
            state[k] = v
    state["training"] = False
    state["_parameters"] = collections.OrderedDict(
        (n, None if p is None else torch.nn.Parameter(tensors[prefix + n], requires_grad=False))
        for n, p in m._parameters.items())
    state["_buffers"] = collections.OrderedDict(
        (n, None if b is None else tensors.get(prefix + n, b)) for n, b in m._buffers.items())
    state["_modules"] = collections.OrderedDict(children)
    state["_init_args"] = ()
    state["_init_kwargs"] = dict(init_kwargs)
    return state


def to_persistent(m: torch.nn.Module, class_name: str, init_kwargs: dict, tensors: dict, prefix: str = "",
                  module_src: str = DUMMY_MODULE_SRC):
    """Mirror the module tree `m`: EDM layers become persistent objects, torch containers plain torch objects.

    Child init kwargs are taken from `child._d2o_init` when present (else `{}`): the loader only uses the top level's.
    """
    children = {}
    for name, child in m._modules.items():
        if child is None:
            children[name] = None
            continue
        kw = getattr(child, "_d2o_init", (None, {}))[1]
        children[name] = to_persistent(child, type(child).__name__, kw, tensors, f"{prefix}{name}.", module_src)
    state = module_state(m, tensors, prefix, init_kwargs, children)
    if isinstance(m, (torch.nn.ModuleDict, torch.nn.ModuleList, torch.nn.Sequential)):
        for k in ("_init_args", "_init_kwargs"):
            state.pop(k)
        return TorchObject(type(m).__module__, type(m).__name__, state)
    return Persistent(class_name, state, module_src)


def write_edm_pickle(path, net_class_name: str, init_kwargs: dict, state_dict: dict, *, module: torch.nn.Module,
                     loss_fn: dict | None = None, augment_pipe: dict | None = None, dataset_kwargs: dict | None = None,
                     extra_items: dict | None = None, protocol: int = 4, module_src: str = DUMMY_MODULE_SRC) -> Path:
    """Write an EDM training snapshot holding `ema` = `module`'s structure with the tensors of `state_dict`.

    `loss_fn` / `augment_pipe` are `{"class_name": ..., "init_kwargs": ..., "attributes": ...}` (persistent plain
    objects, e.g. EDMLoss); defaults: EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5) and no augment pipe (None).
    """
    ema = to_persistent(module, net_class_name, init_kwargs, dict(state_dict), module_src=module_src)
    loss_fn = loss_fn or dict(class_name="EDMLoss", init_kwargs={}, attributes=dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5))

    def plain(rec):
        if rec is None:
            return None
        state = dict(rec.get("attributes", {}), _init_args=(), _init_kwargs=dict(rec.get("init_kwargs", {})))
        return Persistent(rec["class_name"], state, module_src)

    data = dict(ema=ema, loss_fn=plain(loss_fn), augment_pipe=plain(augment_pipe),
                dataset_kwargs=dict(dataset_kwargs or dict(class_name="training.dataset.ImageFolderDataset",
                                                           path="datasets/tiny.zip", use_labels=False, xflip=False,
                                                           cache=True, resolution=8, max_size=16)),
                **(extra_items or {}))
    path = Path(path)
    with open(path, "wb") as f:
        EDMPickler(f, protocol=protocol).dump(data)
    return path


def write_stylegan2ada_pickle(path, D: torch.nn.Module, D_init_kwargs: dict, state_dict: dict | None = None,
                              protocol: int = 4) -> Path:
    """Write a training pickle in stylegan2-ada-pytorch's format [SG2-ADA:training/training_loop.py]: `dict(G=...,
    D=..., G_ema=..., augment_pipe=..., training_set_kwargs=...)` with `D` = `D`'s module tree (our
    StyleGAN2Discriminator uses StyleGAN2-ADA's module and tensor names) as persistent objects, pickled with
    `D_init_kwargs` (StyleGAN2-ADA's argument names, e.g. c_dim, epilogue_kwargs). G and G_ema are small stand-in
    persistent objects (the converter never reads them)."""
    tensors = dict(state_dict if state_dict is not None else D.state_dict())
    kwargs = {k: EasyDict(v) if isinstance(v, dict) else v for k, v in D_init_kwargs.items()}
    d = to_persistent(D, "Discriminator", kwargs, tensors)
    g = to_persistent(torch.nn.Linear(2, 2), "Generator", dict(z_dim=2), dict(torch.nn.Linear(2, 2).state_dict()))
    data = dict(G=g, D=d, G_ema=g, augment_pipe=None,
                training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="cifar10.zip",
                                             use_labels=True, max_size=50000, xflip=False, resolution=32))
    path = Path(path)
    with open(path, "wb") as f:
        EDMPickler(f, protocol=protocol).dump(data)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Optional evidence: a snapshot written by EDM's own code (needs a local EDM checkout; nothing of EDM is committed).

EDM_FIXTURE_SCRIPT = r'''
import copy, pickle, sys, torch
sys.path.insert(0, sys.argv[1])
from training.networks import EDMPrecond
from training.loss import EDMLoss
from training.augment import AugmentPipe
torch.manual_seed(0)
kw = dict(img_resolution=8, img_channels=3, label_dim=10, model_type="SongUNet", embedding_type="positional",
          encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
          model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.13, augment_dim=9)
net = EDMPrecond(**kw)
with torch.no_grad():
    for p in net.parameters():
        p.add_(0.01 * torch.randn_like(p))
data = dict(ema=copy.deepcopy(net).eval().requires_grad_(False).cpu(), loss_fn=EDMLoss(),
            augment_pipe=AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1),
            dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip", use_labels=True))
with open(sys.argv[2], "wb") as f:
    pickle.dump(data, f)  # as EDM's training loop does
x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
s, c = torch.tensor([0.3, 5.0]), torch.nn.functional.one_hot(torch.tensor([1, 7]), 10).float()
torch.save(dict(x=x, s=s, c=c, y=data["ema"](x, s, c), kw=kw, sd=data["ema"].state_dict()), sys.argv[2] + ".ref.pt")
'''


def make_edm_fixture(edm_root, out) -> Path:
    """Run EDM's own code (checkout at `edm_root`) in a subprocess to pickle a tiny EDMPrecond snapshot at `out`,
    plus `out.ref.pt` with its state_dict and one forward pass. Used only when a checkout is available."""
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", EDM_FIXTURE_SCRIPT, str(edm_root), str(out)], check=True,
                   capture_output=True, text=True)
    return Path(out)
