"""Stand-ins for every external file of the paper registry, in the UPSTREAM formats, for a CPU smoke run from file://.

Each `write_*` writes one file (or folder) into `root` under its upstream name and returns its Path: the real
architecture with random weights (fixed seed per fixture), or a tiny dataset in the upstream layout. Files are
byte-identical on every call where the library allows it (torch.save zip archives, EDM/StyleGAN2-ADA/dill pickles
with fixed storage keys, npz/tar/gz/PNG/JPEG without timestamps, CLIP traced in a fresh process).
`write_all(root, what)` writes all of them (or the named subset) and returns {name: {"path", "sha256"}}.
Not a test file: tests/test_smoke_fixtures.py checks that upstream code and the project's readers accept them.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import io
import math
import pickle
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import PIL.Image
import torch
import torch.nn as nn

from d2o.edm.released import RELEASED, released_network

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers_edm_pickle as hep  # noqa: E402

_EDMPickler = hep.EDMPickler  # the helper's pickler (write_edm_pickle looks its module global up at call time)


@contextlib.contextmanager
def _seeded(name: str):
    """torch's global RNG seeded from the fixture's name, restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        yield


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _out(root, name: str) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return root / name


# ---------------------------------------------------------------------------------------------- pickling helpers

_STORAGE_KEY = "94000000000000"  # legacy torch.save names a storage by its address (str(_cdata)); fixed here


def _storage_payload(storage: torch.TypedStorage) -> bytes:
    """What `torch.storage._load_from_bytes` gets in a plain pickle of a tensor (a legacy torch.save of the storage),
    with the address-derived storage key replaced by a fixed one of the usual length (deterministic bytes)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage is deprecated (but what tensors pickle as)
        torch.save(storage, buf, _use_new_zipfile_serialization=False)
        raw, n = buf.getvalue(), storage.nbytes() + 8  # trailer: int64 numel + raw data
    key = str(storage._untyped_storage._cdata).encode()
    op = lambda k: b"X" + struct.pack("<I", len(k)) + k  # noqa: E731 - BINUNICODE (protocol 2 header pickles)
    head = raw[:-n]
    assert head.count(op(key)) == 2, "unexpected legacy storage header"
    return head.replace(op(key), op(_STORAGE_KEY.encode())) + raw[-n:]


class _Pickler(_EDMPickler):
    """The helper's pickler with deterministic tensor storages."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.TypedStorage):
            return torch.storage._load_from_bytes, (_storage_payload(obj),)
        return NotImplemented


@contextlib.contextmanager
def _deterministic_helper_pickles():
    with mock.patch.object(hep, "EDMPickler", _Pickler):
        yield


def _torch_save(obj, path: Path) -> Path:
    torch.save(obj, path)  # zip format (torch >= 1.6; the 2017 VGG files are legacy format): torch.load reads both
    return path


# ---------------------------------------------------------------------------------------------- feature networks

def write_vgg16_bn(root) -> Path:
    """https://download.pytorch.org/models/vgg16_bn-6c64b313.pth: torchvision vgg16_bn state_dict (random init)."""
    import torchvision
    with _seeded("vgg16_bn"):
        return _torch_save(torchvision.models.vgg16_bn(weights=None).state_dict(), _out(root, "vgg16_bn-6c64b313.pth"))


def write_vgg16(root) -> Path:
    """https://download.pytorch.org/models/vgg16-397923af.pth: torchvision vgg16 state_dict (random init)."""
    import torchvision
    with _seeded("vgg16"):
        return _torch_save(torchvision.models.vgg16(weights=None).state_dict(), _out(root, "vgg16-397923af.pth"))


def write_tf_efficientnet_lite0(root) -> Path:
    """https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/tf_efficientnet_lite0-0aa007d2.pth:
    plain state_dict of timm's tf_efficientnet_lite0 (296 tensors; names and shapes = timm 0.5.4's, checked)."""
    import timm
    with _seeded("tf_efficientnet_lite0"):
        sd = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    return _torch_save(sd, _out(root, "tf_efficientnet_lite0-0aa007d2.pth"))


def write_deit_base_distilled(root) -> Path:
    """https://dl.fbaipublicfiles.com/deit/deit_base_distilled_patch16_224-df68dfff.pth: {"model": state_dict} of
    DeiT-B distilled (155 tensors: cls_token, pos_embed, dist_token, patch_embed.proj.*, blocks.N.*, norm.*, head.*,
    head_dist.*; facebookresearch/deit's DistilledVisionTransformer order)."""
    import timm
    with _seeded("deit_base_distilled_patch16_224"):
        sd = timm.create_model("deit_base_distilled_patch16_224", pretrained=False).state_dict()
    return _torch_save({"model": sd}, _out(root, "deit_base_distilled_patch16_224-df68dfff.pth"))


def inception_module() -> nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with random weights (built without its download and load):
    convs He-normal (fan_in, ReLU gain; torch's default init shrinks the 2048-d features to ~1e-8), BatchNorms and fc
    torch defaults, so that features are O(0.1-1)."""
    import torch_fidelity.feature_extractor_inceptionv3 as m
    with mock.patch.object(m, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(m.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None):
        net = m.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    return net


def write_inception(root) -> Path:
    """https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth:
    the state_dict FeatureExtractorInceptionV3 loads (566 tensors, fc 2048 -> 1008)."""
    with _seeded("inception"):
        sd = inception_module().state_dict()
    return _torch_save(sd, _out(root, "weights-inception-2015-12-05-6726825d.pth"))


class CLIP(nn.Module):
    """OpenAI's CLIP module tree (state_dict names, order and the ViT-B/32 sizes: 151,277,313 parameters) from
    torch-fidelity's CLIP blocks; `input_resolution`, `context_length`, `vocab_size` are 0-d buffers as in OpenAI's
    TorchScript files. forward(image, text) -> (logits_per_image, logits_per_text) as OpenAI's."""

    def __init__(self, embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                 context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12):
        from torch_fidelity.feature_extractor_clip import LayerNorm, Transformer, VisionTransformer
        super().__init__()
        self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                        vision_width // 64, embed_dim)
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, attn_mask=mask)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width).normal_(std=0.01))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim).normal_(std=transformer_width ** -0.5))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for k, v in dict(input_resolution=image_resolution, context_length=context_length, vocab_size=vocab_size).items():
            self.register_buffer(k, torch.tensor(v))

    def forward(self, image, text):
        dt = self.visual.conv1.weight.dtype
        im = self.visual(image.type(dt))
        x = self.token_embedding(text).type(dt) + self.positional_embedding.type(dt)
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)).type(dt)
        tx = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
        im, tx = im / im.norm(dim=1, keepdim=True), tx / tx.norm(dim=1, keepdim=True)
        logits = self.logit_scale.exp() * im @ tx.t()
        return logits, logits.t()


def _clip_archive(path: str) -> None:
    """Trace CLIP ViT-B/32 (fp16 as OpenAI ships it: torch-fidelity's convert_weights, i.e. conv/linear/attention
    weights, plus text_projection and visual.proj as OpenAI's convert_weights; embeddings, LayerNorms, logit_scale
    stay fp32) and torch.jit.save it. Run in a fresh process: TorchScript numbers its classes per process."""
    from torch_fidelity.feature_extractor_clip import convert_weights
    with _seeded("clip-vit-b-32"):
        model = CLIP().eval()
    convert_weights(model)
    for p in (model.text_projection, model.visual.proj):
        p.data = p.data.half()
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :3] = torch.tensor([49406, 320, 49407])  # <start> "a" <end>
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.zeros(1, 3, 224, 224, dtype=torch.half), text), check_trace=False)
        torch.jit.save(traced, path)


def write_clip_vit_b_32(root) -> Path:
    """https://openaipublic.azureedge.net/clip/models/40d3657.../ViT-B-32.pt: TorchScript archive of the whole CLIP
    ViT-B/32 (random weights, fp16), ~354 MB."""
    path = _out(root, "ViT-B-32.pt")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import torch; "
            f"torch.set_num_threads(1); import smoke_fixtures; smoke_fixtures._clip_archive(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)  # the path
    # is an argument: the trace's debug records hold the calling code, so the archive would depend on it
    return path


# ---------------------------------------------------------------------------------------------- class embedding

class _DillSet:
    """`dill._dill._load_type('set')`: how dill pickled the `set` type (the Embedding's _non_persistent_buffers_set)."""

    def __reduce__(self):
        return hep.named_global("dill._dill", "_load_type"), ("set",)

    def __call__(self, *args):
        raise TypeError


class _EmptySet:
    def __reduce__(self):
        return _DillSet(), ([],)


def write_class_embedding(root) -> Path:
    """https://github.com/Zyriix/D2O/raw/9f8124de.../in_embeddings/tf_efficientnet_lite0.pkl: StyleGAN-XL's
    `{'embed': nn.Embedding(1000, 320)}` as dill.dump wrote it (protocol 3, NEWOBJ + BUILD of the module __dict__ of
    torch < 1.8, memoised as pickle does), random N(0, 1) rows. 1,280,990 bytes, the size of the real file."""
    with _seeded("class_embedding"):
        weight = torch.randn(1000, 320)
    od = collections.OrderedDict
    state = dict(training=True, _parameters=od(weight=nn.Parameter(weight)), _buffers=od(),
                 _non_persistent_buffers_set=_EmptySet(),
                 **{k: od() for k in ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                                      "_load_state_dict_pre_hooks", "_modules")},
                 num_embeddings=1000, embedding_dim=320, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False)
    path = _out(root, "tf_efficientnet_lite0.pkl")
    with open(path, "wb") as f:
        _Pickler(f, protocol=3).dump({"embed": hep.TorchObject("torch.nn.modules.sparse", "Embedding", state)})
    return path


# ---------------------------------------------------------------------------------------------- EDM checkpoints

def _edm(name, augment, zip_name, size):
    """A released checkpoint's network kwargs (d2o.edm.released: EDM train.py's order) and the pickle's augment_pipe
    (--augment p; None without) / dataset_kwargs."""
    kw = released_network(name)
    res, label_dim = kw["img_resolution"], kw["label_dim"]
    aug = dict(p=augment, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1) if augment else None
    ds = dict(class_name="training.dataset.ImageFolderDataset", path=f"datasets/{zip_name}", use_labels=label_dim > 0,
              xflip=False, cache=True, resolution=res, max_size=size)
    return kw, aug, ds


# registry name -> (upstream file name, network kwargs, augment kwargs, dataset kwargs); EDM README's training commands
_PICKLES = {"edm-cifar10-uncond": (0.12, "cifar10-32x32.zip", 50000), "edm-cifar10-cond": (0.12, "cifar10-32x32.zip", 50000),
            "edm-afhqv2": (0.15, "afhqv2-64x64.zip", 15803), "edm-ffhq": (0.15, "ffhq-64x64.zip", 70000),
            "edm-imagenet": (0, "imagenet-64x64.zip", 1281167),
            "edm-cifar10-uncond-vp": (0.12, "cifar10-32x32.zip", 50000), "edm-cifar10-cond-vp": (0.12, "cifar10-32x32.zip", 50000),
            "edm-afhqv2-vp": (0.15, "afhqv2-64x64.zip", 15803), "edm-ffhq-vp": (0.15, "ffhq-64x64.zip", 70000)}
EDM_CHECKPOINTS = {k: (RELEASED[k][0], *_edm(k, *v)) for k, v in _PICKLES.items()}
# EDM's AugmentPipe.__init__ defaults (every argument is stored as a float attribute)
_AUGMENT_DEFAULTS = dict(p=1, xflip=0, yflip=0, rotate_int=0, translate_int=0, translate_int_max=0.125, scale=0,
                         rotate_frac=0, aniso=0, translate_frac=0, scale_std=0.2, rotate_frac_max=1, aniso_std=0.2,
                         aniso_rotate_prob=0.5, translate_frac_std=0.125, brightness=0, contrast=0, lumaflip=0, hue=0,
                         saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1)


def write_edm_checkpoint(root, name: str) -> Path:
    """https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/<file>: EDM training snapshot dict(ema=EDMPrecond, loss_fn=
    EDMLoss, augment_pipe=AugmentPipe | None, dataset_kwargs) of the released configuration `name` (a key of
    EDM_CHECKPOINTS), random weights (EDM's init), pickle protocol 4, written with tests/helpers_edm_pickle.py."""
    from d2o.edm import model_io
    fname, kw, aug, ds = EDM_CHECKPOINTS[name]
    with _seeded(name):
        net = model_io.build("EDMPrecond", **kw).eval()
    pipe = None if aug is None else dict(class_name="AugmentPipe", init_kwargs=aug,
                                         attributes={k: float(aug.get(k, v)) for k, v in _AUGMENT_DEFAULTS.items()})
    with _deterministic_helper_pickles(), torch.no_grad():
        return hep.write_edm_pickle(_out(root, fname), "EDMPrecond", kw, net.state_dict(), module=net,
                                    augment_pipe=pipe, dataset_kwargs=ds)


# StyleGAN2-ADA D kwargs of its cifar10.pkl: train.py --cfg=cifar --cond=1 (native PyTorch training; kwargs in the
# order train.py + training_loop.py pass them), or what legacy.py writes for a pickle converted from TensorFlow.
SG2ADA_CIFAR = dict(block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={"mbstd_group_size": 32}, channel_base=32768,
                    channel_max=512, num_fp16_res=4, conv_clamp=256, architecture="orig", c_dim=10, img_resolution=32,
                    img_channels=3)
SG2ADA_CIFAR_TF = dict(c_dim=10, img_resolution=32, img_channels=3, architecture="orig", channel_base=32768,
                       channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None,
                       block_kwargs={"activation": "lrelu", "resample_filter": [1, 3, 3, 1], "freeze_layers": 0},
                       mapping_kwargs={"num_layers": 0, "embed_features": None, "layer_features": None,
                                       "activation": "lrelu", "lr_multiplier": 0.1},
                       epilogue_kwargs={"mbstd_group_size": 32, "mbstd_num_channels": 1, "activation": "lrelu"})


def write_stylegan2ada_cifar10(root, tf_converted: bool = False) -> Path:
    """https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/cifar10.pkl: stylegan2-ada-pytorch training
    pickle; D = its class-conditional CIFAR-10 Discriminator (architecture 'orig', conv_clamp 256, mbstd group 32;
    23,089,664 parameters natively, names and shapes equal to StyleGAN2-ADA's own class), random weights; G/G_ema
    are the helper's small stand-ins (the converter reads only D)."""
    from d2o.stylegan2_discriminator import StyleGAN2Discriminator
    from d2o.stylegan2ada_checkpoint import _stylegan2ada_kwargs
    kw = SG2ADA_CIFAR_TF if tf_converted else SG2ADA_CIFAR
    with _seeded("stylegan2ada-cifar10"):
        D = StyleGAN2Discriminator(**_stylegan2ada_kwargs(kw, "stylegan2ada-cifar10")).eval()
    with _deterministic_helper_pickles(), _seeded("stylegan2ada-cifar10-G"):
        return hep.write_stylegan2ada_pickle(_out(root, "cifar10.pkl"), D, kw)


# ---------------------------------------------------------------------------------------------- datasets

def _smooth_images(rng: np.random.Generator, n: int, w: int, h: int) -> list[np.ndarray]:
    """n uint8 HWC images: a random 4x4 colour grid, bicubic-upsampled, plus a little noise."""
    out = []
    for _ in range(n):
        grid = PIL.Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), PIL.Image.BICUBIC)
        out.append(np.clip(np.asarray(grid, np.int16) + rng.integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8))
    return out


_NP_RECONSTRUCT = hep.named_global("numpy.core.multiarray", "_reconstruct")
_NP_NDARRAY, _NP_DTYPE = hep.named_global("numpy", "ndarray"), hep.named_global("numpy", "dtype")


class _Py2Pickler(_EDMPickler):
    """Protocol 2 as Python 2's cPickle wrote CIFAR-10's batches: str is a py2 str (SHORT_BINSTRING/BINSTRING), numpy
    arrays are numpy.core.multiarray._reconstruct + BUILD (1, shape, dtype, False, raw bytes)."""

    dispatch = dict(_EDMPickler.dispatch)

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(b)]) if len(b) < 256 else pickle.BINSTRING + struct.pack("<i", len(b))) + b)
        self.memoize(obj)
    dispatch[str] = dispatch[bytes] = save_py2_str

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            return _NP_RECONSTRUCT, (_NP_NDARRAY, (0,), b"b"), (1, obj.shape, obj.dtype, False, obj.tobytes())
        if isinstance(obj, np.dtype):
            return _NP_DTYPE, (obj.str[1:], 0, 1), (3, obj.str[0], None, None, None, -1, -1, 0)
        return NotImplemented


CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10_tarball(root, n: int = 20) -> Path:
    """https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: cifar-10-batches-py/{data_batch_1..5, test_batch,
    batches.meta, readme.html}; each batch a Python 2 pickle of {'data': uint8 (n, 3072) (R, G, B planes),
    'labels': [int], 'batch_label': str, 'filenames': [str]} with `n` (>= 10) images covering the 10 classes."""
    assert n >= 10, "n >= 10 images per batch so that every batch covers the 10 classes"
    rng = _rng("cifar10")
    members = {}
    for b, label in [(i, f"training batch {i} of 5") for i in range(1, 6)] + [(6, "testing batch 1 of 1")]:
        labels = rng.permutation(np.arange(n) % 10).tolist()
        data = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in _smooth_images(rng, n, 32, 32)])
        d = {"data": data, "labels": labels, "batch_label": label,
             "filenames": [f"{CIFAR10_LABELS[y]}_s_{b * 100000 + i:06d}.png" for i, y in enumerate(labels)]}
        members["test_batch" if b == 6 else f"data_batch_{b}"] = d
    members["batches.meta"] = {"num_cases_per_batch": n, "label_names": CIFAR10_LABELS, "num_vis": 3072}
    path = _out(root, "cifar-10-python.tar.gz")
    with open(path, "wb") as raw, gzip.GzipFile("cifar-10-python.tar", "wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, payload: bytes | None):
            info = tarfile.TarInfo(f"cifar-10-batches-py{'/' + name if name else ''}")
            info.mtime, info.uname, info.gname = 1244832000, "kriz", "kriz"  # 2009-06-12
            if payload is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                return tar.addfile(info)
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
        add("", None)
        for name, d in sorted(members.items()):
            buf = io.BytesIO()
            _Py2Pickler(buf, protocol=2).dump(d)
            add(name, buf.getvalue())
        add("readme.html", b'<meta HTTP-EQUIV="REFRESH" content="0; url=http://www.cs.toronto.edu/~kriz/cifar.html">\n')
    return path


def write_afhqv2_folder(root, n: int = 3, size: int = 80) -> Path:
    """AFHQv2 (https://github.com/clovaai/stargan-v2 'afhq-v2-dataset', unzipped): afhqv2/{train,test}/{cat,dog,wild}/
    <source>_<class>_<index>.png, `n` RGB PNGs of size x size per split and class (the real ones are 512 x 512)."""
    rng, folder = _rng("afhqv2"), _out(root, "afhqv2")
    for split in ("train", "test"):
        for cls in ("cat", "dog", "wild"):
            (folder / split / cls).mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(_smooth_images(rng, n, size, size)):
                PIL.Image.fromarray(im).save(folder / split / cls / f"{('flickr', 'pixabay')[i % 2]}_{cls}_{i:06d}.png")
    return folder


def write_ffhq_folder(root, n: int = 6, size: int = 96) -> Path:
    """FFHQ images1024x1024 (https://github.com/NVlabs/ffhq-dataset download_ffhq.py --images): ffhq/images1024x1024/
    00000/00000.png ..., `n` square RGB PNGs of size x size (the real ones are 1024 x 1024)."""
    rng, folder = _rng("ffhq"), _out(root, "ffhq") / "images1024x1024"
    for i, im in enumerate(_smooth_images(rng, n, size, size)):
        (folder / f"{i // 1000 * 1000:05d}").mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(im).save(folder / f"{i // 1000 * 1000:05d}" / f"{i:05d}.png")
    return folder


IMAGENET_SYNSETS = ("n01440764", "n01443537", "n01484850")


def write_imagenet_folder(root, n: int = 4, synsets=IMAGENET_SYNSETS) -> Path:
    """ImageNet train of Kaggle's 'ImageNet Object Localization Challenge': imagenet/ILSVRC/Data/CLS-LOC/train/
    <synset>/<synset>_<index>.JPEG, `n` non-square JPEGs per synset (landscape and portrait; as in the real set, one
    grayscale and one CMYK JPEG)."""
    rng, folder = _rng("imagenet"), _out(root, "imagenet") / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    for s, syn in enumerate(synsets):
        (folder / syn).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = [(100, 75), (75, 100), (120, 90), (90, 120)][(i + s) % 4]
            img = PIL.Image.fromarray(_smooth_images(rng, 1, w, h)[0])
            img = img.convert("L") if (s, i) == (1, 0) else img.convert("CMYK") if (s, i) == (2, 0) else img
            img.save(folder / syn / f"{syn}_{1000 + 37 * i}.JPEG", quality=90)
    return folder


# ---------------------------------------------------------------------------------------------- reference statistics

def _savez(path: Path, **arrays) -> Path:
    """np.savez's format (uncompressed zip of .npy files) with fixed member timestamps (deterministic bytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for k, a in arrays.items():
            with z.open(zipfile.ZipInfo(f"{k}.npy", (1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return path


def _stats(rng: np.random.Generator, d: int, rank: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Plausible pool features' mean (>= 0) and covariance: diagonal + low rank, symmetric positive definite."""
    mu = np.abs(rng.normal(0.4, 0.2, d))
    low = rng.normal(0, 0.03, (d, rank))
    sigma = np.diag(rng.uniform(0.01, 0.1, d)) + low @ low.T
    return mu, (sigma + sigma.T) / 2


FID_REFS = {"cifar10": "cifar10-32x32.npz", "afhqv2": "afhqv2-64x64.npz", "ffhq": "ffhq-64x64.npz",
            "imagenet64": "imagenet-64x64.npz"}


def write_fid_ref(root, dataset: str) -> Path:
    """https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/<file>: EDM's fid.py ref, np.savez(mu=(2048,) float64,
    sigma=(2048, 2048) float64), sigma symmetric positive definite. `dataset`: a key of FID_REFS."""
    mu, sigma = _stats(_rng(f"fid-ref-{dataset}"), 2048)
    return _savez(_out(root, FID_REFS[dataset]), mu=mu, sigma=sigma)


def write_pr_ref_imagenet64(root, n: int = 40) -> Path:
    """https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/64/VIRTUAL_imagenet64_labeled.npz:
    guided-diffusion's reference batch: mu, sigma (pool_3, 2048), mu_s, sigma_s (spatial, 7 x 17 x 17 = 2023) as
    evaluator.py computes them (mean of float32 -> float32, np.cov -> float64) and arr_0 = `n` uint8 (64, 64, 3)
    images (10,000 in the real file; the project reads only arr_0)."""
    rng = _rng("pr-ref-imagenet64")
    (mu, sigma), (mu_s, sigma_s) = _stats(rng, 2048), _stats(rng, 2023)
    return _savez(_out(root, "VIRTUAL_imagenet64_labeled.npz"), mu=mu.astype(np.float32), sigma=sigma,
                  mu_s=mu_s.astype(np.float32), sigma_s=sigma_s, arr_0=np.stack(_smooth_images(rng, n, 64, 64)))


# ---------------------------------------------------------------------------------------------- all of them

FIXTURES = {  # name -> writer(root); names: the registry's weights/checkpoints/datasets keys, fid-refs/<ds>, pr-refs/<ds>
    "vgg16_bn": write_vgg16_bn, "vgg16": write_vgg16, "tf_efficientnet_lite0": write_tf_efficientnet_lite0,
    "deit_base_distilled_patch16_224": write_deit_base_distilled, "inception-v3-compat": write_inception,
    "clip-vit-b-32": write_clip_vit_b_32, "in-embedding-tf-efficientnet-lite0": write_class_embedding,
    **{k: (lambda root, k=k: write_edm_checkpoint(root, k)) for k in EDM_CHECKPOINTS},
    "stylegan2ada-cifar10": write_stylegan2ada_cifar10,
    "cifar10": write_cifar10_tarball, "afhqv2": write_afhqv2_folder, "ffhq": write_ffhq_folder,
    "imagenet64": write_imagenet_folder,
    **{f"fid-refs/{k}": (lambda root, k=k: write_fid_ref(root, k)) for k in FID_REFS},
    "pr-refs/imagenet64": write_pr_ref_imagenet64,
}


def sha256_path(path: Path) -> str:
    """SHA-256 of a file; of a folder: of its sorted (relative path, file SHA-256) lines."""
    path = Path(path)
    if path.is_dir():
        lines = "".join(f"{p.relative_to(path).as_posix()}\0{sha256_path(p)}\n" for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.sha256(lines.encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


ALIASES = {"inception": "inception-v3-compat", "class_embedding": "in-embedding-tf-efficientnet-lite0"}


def write_all(root, what=None) -> dict:
    """Write every fixture of FIXTURES (or those named in `what`; ALIASES accepted) into `root`:
    {name: {"path": Path, "sha256": hex}}, keyed by the names as given."""
    names = list(FIXTURES) if what is None else [ALIASES.get(n, n) for n in what]
    unknown = sorted(set(names) - set(FIXTURES))
    if unknown:
        raise KeyError(f"unknown fixtures {unknown}; known: {sorted(FIXTURES)}")
    out = {}
    for given, name in zip(list(FIXTURES) if what is None else what, names):
        path = FIXTURES[name](root)
        out[given] = {"path": path, "sha256": sha256_path(path)}
    return out
