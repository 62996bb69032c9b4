"""StyleGAN2-ADA's released discriminators, read without running their pickles' code and converted into the project's
format (Table 1 "StyleGAN2 (Pre-trained)"; checkpoint kind `stylegan2ada-discriminator`)."""

from __future__ import annotations

import os
from pathlib import Path

from d2o.stylegan2_discriminator import StyleGAN2Discriminator

# StyleGAN2-ADA's released discriminators (the Table 1 "StyleGAN2 (Pre-trained)" row; spec §3.6: the release names
# no checkpoint, so the registry uses the public StyleGAN2-ADA CIFAR-10 one).

STYLEGAN2ADA_KIND = "stylegan2ada-discriminator"  # config.checkpoints.<name>.kind of such a checkpoint


def _stylegan2ada_kwargs(kw: dict, where: str) -> dict:
    """StyleGAN2Discriminator kwargs for stylegan2-ada-pytorch's `Discriminator(**kw)`; refuses what is not modelled.

    Training-only settings are dropped: `num_fp16_res` (FP16 for the highest resolutions; here the math runs in the
    trainer's precision, fp32 by default), `block_kwargs.freeze_layers` and `fp16_channels_last`."""
    def fail(what):
        return ValueError(f"{where}: {what}; d2o.stylegan2_discriminator.StyleGAN2Discriminator does not model it")

    known = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
             "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"}
    if set(kw) - known:
        raise fail(f"unknown init arguments {sorted(set(kw) - known)}")
    block = {k: v for k, v in dict(kw.get("block_kwargs") or {}).items() if k not in ("freeze_layers", "fp16_channels_last")}
    mapping, epilogue = dict(kw.get("mapping_kwargs") or {}), dict(kw.get("epilogue_kwargs") or {})
    channels_4 = min(int(kw.get("channel_base", 32768)) // 4, int(kw.get("channel_max", 512)))
    cmap_dim = kw.get("cmap_dim") or channels_4
    for key in ("embed_features", "layer_features"):  # pickles converted from TensorFlow give cmap_dim or None
        if mapping.get(key) in (None, cmap_dim):
            mapping.pop(key, None)
    defaults = [(block, "activation", "lrelu"), (block, "resample_filter", [1, 3, 3, 1]), (mapping, "activation", "lrelu"),
                (epilogue, "activation", "lrelu")]
    for group, key, value in defaults:
        if key in group and (list(group[key]) if isinstance(value, list) else group[key]) != value:
            raise fail(f"{key}={group[key]!r} (only {value!r})")
        group.pop(key, None)
    mapping_layers, mapping_lr = mapping.pop("num_layers", 8), mapping.pop("lr_multiplier", 0.01)
    mbstd_group_size, mbstd_num_channels = epilogue.pop("mbstd_group_size", 4), epilogue.pop("mbstd_num_channels", 1)
    if block or mapping or epilogue:
        raise fail(f"block/mapping/epilogue arguments {sorted({**block, **mapping, **epilogue})}")
    if mbstd_group_size is None:
        raise fail("minibatch-std over the entire minibatch (mbstd_group_size None)")
    return dict(img_resolution=int(kw["img_resolution"]), label_dim=int(kw.get("c_dim", 0)),
                img_channels=int(kw.get("img_channels", 3)), channel_base=int(kw.get("channel_base", 32768)),
                channel_max=int(kw.get("channel_max", 512)), cmap_dim=kw.get("cmap_dim"), conv_clamp=kw.get("conv_clamp"),
                mbstd_group_size=int(mbstd_group_size), mbstd_num_channels=int(mbstd_num_channels),
                architecture=kw.get("architecture", "resnet"), mapping_layers=int(mapping_layers),
                mapping_lr_multiplier=float(mapping_lr))


def convert_stylegan2ada_discriminator(src_pkl: str | os.PathLike, dst: str | os.PathLike,
                                       extra: dict | None = None) -> Path:
    """Write the discriminator `D` of a stylegan2-ada-pytorch training pickle (e.g. its pretrained cifar10.pkl) to
    `dst` in the project format (`d2o.edm.model_io`: safetensors + header with the StyleGAN2Discriminator kwargs).

    The pickle is read with d2o.edm.persistence's allow-list unpickler: no code from the file runs (its embedded module
    sources are never looked at). Names and shapes must match StyleGAN2Discriminator exactly; weights are stored in
    float32."""
    from d2o.edm.model_io import save_model
    from d2o.edm.persistence import EDMPickleError, PersistentRecord, collect_tensors, instantiate_with, read_pickle_records

    data = read_pickle_records(src_pkl)
    rec = data.get("D") if isinstance(data, dict) else None
    if not isinstance(rec, PersistentRecord) or rec.class_name != "Discriminator":
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise EDMPickleError(f"{src_pkl}: no StyleGAN2-ADA discriminator under key 'D' (found {keys}); expected a "
                             f"stylegan2-ada-pytorch training pickle (network-snapshot-*.pkl or a pretrained/*.pkl)")
    init_kwargs = dict(rec.state.get("_init_kwargs") or {})
    kwargs = _stylegan2ada_kwargs(init_kwargs, f"{src_pkl}: D")
    tensors = {k: v.float() for k, v in collect_tensors(rec).items()}
    net = instantiate_with(lambda: StyleGAN2Discriminator(**kwargs), tensors, f"{src_pkl}: D -> StyleGAN2Discriminator{kwargs}")
    net._d2o_init = ("StyleGAN2Discriminator", kwargs)
    info = {"source_checkpoint": str(src_pkl), "source_key": "D", "source_init_kwargs": init_kwargs, **dict(extra or {})}
    return save_model(net, dst, extra=info)


def load_stylegan2_checkpoint(path: str | os.PathLike, img_resolution: int, label_dim: int = 0,
                              **expected) -> StyleGAN2Discriminator:
    """The StyleGAN2Discriminator stored at `path` (`convert_stylegan2ada_discriminator`), for images of
    `img_resolution` and `label_dim` classes. A conditional checkpoint loads into an unconditional discriminator
    without its label mapping (`mapping.*`) and with a freshly initialised output layer (`b4.out`, 1 logit instead of
    the projection onto the label embedding); the dropped names are in `.reinitialised`. `expected` kwargs (e.g. the
    experiment's channel_max) must equal the checkpoint's."""
    from safetensors.torch import load_file

    from d2o.edm.model_io import read_header

    header = read_header(path)
    if header["class"] != "StyleGAN2Discriminator":
        raise ValueError(f"{path}: holds a {header['class']}, not a StyleGAN2Discriminator; discriminator.init must name a "
                         f"checkpoint of kind {STYLEGAN2ADA_KIND!r}")
    kw = dict(header["init_kwargs"])
    if kw["img_resolution"] != img_resolution:
        raise ValueError(f"{path}: the checkpoint's discriminator takes {kw['img_resolution']} px images, the "
                         f"experiment's dataset has {img_resolution} px; use a checkpoint of this dataset")
    for key, value in expected.items():
        if kw.get(key) != value:
            raise ValueError(f"{path}: the checkpoint's discriminator has {key}={kw.get(key)!r}, the experiment "
                             f"{value!r}; change discriminator.{key} or the checkpoint")
    if label_dim not in (0, kw["label_dim"]):
        raise ValueError(f"{path}: the checkpoint's discriminator has {kw['label_dim']} classes, the experiment "
                         f"{label_dim}; use a checkpoint of this dataset")
    dropped = ("mapping.", "b4.out.") if label_dim != kw["label_dim"] else ()
    kw["label_dim"] = label_dim
    net = StyleGAN2Discriminator(**kw)
    tensors = load_file(str(path))
    net.reinitialised = sorted(k for k in net.state_dict() if dropped and k.startswith(dropped))
    missing, unexpected = net.load_state_dict({k: v for k, v in tensors.items() if not (dropped and k.startswith(dropped))},
                                              strict=False)
    if sorted(missing) != net.reinitialised or unexpected:
        raise ValueError(f"{path}: weights do not match StyleGAN2Discriminator{kw}: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}; convert the checkpoint again (rule convert_checkpoint)")
    net.d2o_extra = header.get("extra", {})
    return net
