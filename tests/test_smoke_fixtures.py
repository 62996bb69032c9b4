"""tests/smoke_fixtures.py: every stand-in for an external file is accepted by the upstream code that reads the real one
(torchvision, timm, torch-fidelity, pickle/numpy) and by the project's own readers and converters."""

import copy
import hashlib
import pickle
import pickletools
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import smoke_fixtures as sf  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Fixture files written once per module, on demand: fx("name") -> Path."""
    root, cache = tmp_path_factory.mktemp("smoke"), {}

    def get(name, **kw):
        key = (name, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = sf.FIXTURES[name](root / "_".join(map(str, kw.values())), **kw) if kw else sf.FIXTURES[name](root)
        return cache[key]
    return get


def _uint8(n=4, size=40, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- feature networks

@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_vgg_is_a_torchvision_state_dict(fx, name):
    import torchvision
    path = fx(name)
    model = getattr(torchvision.models, name)(weights=None)
    sd = torch.load(path, weights_only=True)
    model.load_state_dict(sd, strict=True)
    assert list(sd) == list(model.state_dict()) and sd["classifier.6.weight"].shape == (1000, 4096)
    if name == "vgg16_bn":
        from d2o.feature_networks import build_feature_network
        feats = build_feature_network(name, pretrained=False, weights=path)(torch.randn(1, 3, 224, 224))
        assert [tuple(f.shape[1:]) for f in feats] == [(128, 112, 112), (256, 56, 56), (512, 28, 28), (512, 14, 14)]


def test_lite0_is_timm_054s_state_dict(fx):
    """Names and shapes equal timm 0.5.4's tf_efficientnet_lite0 (compared once with timm 0.5.4 installed from PyPI:
    296 tensors, same order): the stem is bn1 (+ a parameter-free act1), so timm >= 0.9's BatchNormAct2d keys agree."""
    import timm
    path = fx("tf_efficientnet_lite0")
    sd = torch.load(path, weights_only=True)
    timm.create_model("tf_efficientnet_lite0", pretrained=False).load_state_dict(sd, strict=True)
    assert len(sd) == 296 and list(sd)[:6] == ["conv_stem.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                               "bn1.running_var", "bn1.num_batches_tracked"]
    assert not any(k.startswith("act") or ".act" in k or ".se." in k for k in sd)  # lite: ReLU6, no squeeze-excite
    assert sd["classifier.weight"].shape == (1000, 1280) and sd["blocks.6.0.conv_pwl.weight"].shape == (320, 1152, 1, 1)
    from d2o.feature_networks import build_feature_network
    feats = build_feature_network("tf_efficientnet_lite0", pretrained=False, weights=path)(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 56, 56), (40, 28, 28), (112, 14, 14), (320, 7, 7)]


def test_deit_is_facebooks_checkpoint(fx):
    import timm
    path = fx("deit_base_distilled_patch16_224")
    obj = torch.load(path, weights_only=True)
    assert list(obj) == ["model"]
    sd = obj["model"]
    timm.create_model("deit_base_distilled_patch16_224", pretrained=False).load_state_dict(sd, strict=True)
    assert len(sd) == 155 and list(sd)[:5] == ["cls_token", "pos_embed", "dist_token", "patch_embed.proj.weight",
                                               "patch_embed.proj.bias"]
    assert list(sd)[-6:] == ["norm.weight", "norm.bias", "head.weight", "head.bias", "head_dist.weight", "head_dist.bias"]
    assert {k.split(".")[0] for k in sd} == {"cls_token", "pos_embed", "dist_token", "patch_embed", "blocks", "norm",
                                             "head", "head_dist"}
    assert sd["pos_embed"].shape == (1, 198, 768) and sd["blocks.11.mlp.fc2.weight"].shape == (768, 3072)
    from d2o.feature_networks import build_feature_network
    net = build_feature_network("deit_base_distilled_patch16_224", pretrained=False, weights=path)
    assert torch.equal(net.vit.dist_token, sd["dist_token"])


def test_inception_loads_into_torch_fidelity_with_finite_features(fx):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    path = fx("inception-v3-compat")
    fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                     feature_extractor_weights_path=str(path))
    with torch.no_grad():
        f, logits = fe(_uint8())
    assert f.shape == (4, 2048) and logits.shape == (4, 1008)
    assert torch.isfinite(f).all() and torch.isfinite(logits).all()
    assert 0.01 < f.abs().mean() < 100 and f.std(0).mean() > 1e-4  # sane scale, depends on the image


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_clip_archive_is_deterministic(fx, tmp_path):
    assert sf.sha256_path(sf.write_clip_vit_b_32(tmp_path)) == sf.sha256_path(fx("clip-vit-b-32"))


@pytest.mark.filterwarnings("ignore")
def test_clip_torchscript_archive_builds_torch_fidelitys_clip(fx):
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
    path = fx("clip-vit-b-32")
    sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert sum(v.numel() for k, v in sd.items() if v.is_floating_point()) == 151_277_313  # OpenAI's ViT-B/32
    assert list(sd)[:6] == ["positional_embedding", "text_projection", "logit_scale", "input_resolution",
                            "context_length", "vocab_size"]
    assert [int(sd[k]) for k in ("input_resolution", "context_length", "vocab_size")] == [224, 77, 49408]
    assert sd["visual.conv1.weight"].dtype == sd["text_projection"].dtype == sd["visual.proj"].dtype == torch.float16
    assert sd["visual.transformer.resblocks.11.attn.in_proj_weight"].dtype == torch.float16
    assert sd["token_embedding.weight"].dtype == sd["visual.ln_post.weight"].dtype == torch.float32
    fe = FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=str(path))
    with torch.no_grad():
        (f,) = fe(_uint8())
    assert f.shape == (4, 512) and f.dtype == torch.float32 and torch.isfinite(f).all() and f.std(0).mean() > 1e-4
    try:
        from d2o.torchscript_weights import read_torchscript_state_dict
    except ImportError:
        return
    ours = read_torchscript_state_dict(path)  # the project's reader (no torch.jit.load): same tensors
    assert list(ours) == list(sd) and all(torch.equal(ours[k], sd[k]) for k in sd)


def test_class_embedding_is_stylegan_xls_dill_pickle(fx, monkeypatch):
    from d2o.class_embedding import convert_class_embedding, read_class_embedding_pickle
    path = fx("in-embedding-tf-efficientnet-lite0")
    assert path.stat().st_size == 1_280_990  # the size of Zyriix/D2O's in_embeddings/tf_efficientnet_lite0.pkl
    globals_ = [arg.replace(" ", ".") for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name == "GLOBAL"]
    assert globals_ == ["torch.nn.modules.sparse.Embedding", "collections.OrderedDict", "torch._utils._rebuild_parameter",
                        "torch._utils._rebuild_tensor_v2", "torch.storage._load_from_bytes", "dill._dill._load_type"]
    w = read_class_embedding_pickle(path)
    assert w.shape == (1000, 320) and w.dtype == torch.float32 and 0.9 < w.std() < 1.1
    from test_feature_networks import write_embedding_pickle  # the opcodes of D2O's file, without its memo writes

    def ops(b):
        return [(op.name, None if op.name.endswith("GET") else len(a) if op.name == "BINBYTES" else a)
                for op, a, _ in pickletools.genops(b) if not op.name.endswith("PUT")]
    ref = write_embedding_pickle(path.with_name("ref.pkl"), w)
    assert ops(path.read_bytes()) == ops(ref.read_bytes())
    meta = convert_class_embedding(path, path.with_suffix(".safetensors"))
    assert meta["shape"] == "1000x320" and meta["source_sha256"] == sf.sha256_path(path)
    dill = types.ModuleType("dill")  # what unpickling it with dill installed does: a real nn.Embedding
    dill._dill = types.SimpleNamespace(_load_type=lambda name: {"set": set}[name])
    monkeypatch.setitem(sys.modules, "dill", dill)
    monkeypatch.setitem(sys.modules, "dill._dill", dill._dill)
    with open(path, "rb") as f:
        emb = pickle.load(f)["embed"]
    assert isinstance(emb, torch.nn.Embedding) and torch.equal(emb.weight, w)
    assert torch.equal(emb(torch.tensor([3])), w[3:4])


# ---------------------------------------------------------------------------------------------- checkpoints

EDM_PARAMS = {"edm-cifar10-uncond": 56_397_827, "edm-cifar10-cond": 56_400_643, "edm-afhqv2": 62_761_091,
              "edm-ffhq": 62_761_091, "edm-imagenet": 295_899_267, "edm-cifar10-uncond-vp": 55_733_891,
              "edm-cifar10-cond-vp": 55_735_299, "edm-afhqv2-vp": 61_805_571, "edm-ffhq-vp": 61_805_571}


def _registry():
    return yaml.safe_load(Path("config/config.yaml").read_text())


def _check_edm(path, name, tmp_path):
    from d2o.config import architecture_of
    from d2o.edm.model_io import convert_edm_pickle, load_model, read_header
    from d2o.edm.persistence import load_edm_pickle
    _, kw, aug, ds = sf.EDM_CHECKPOINTS[name]
    data = load_edm_pickle(path)
    assert list(data) == ["ema", "loss_fn", "augment_pipe", "dataset_kwargs"]
    ema = data["ema"]
    assert type(ema).__name__ == "EDMPrecond" and ema._d2o_init == ("EDMPrecond", kw)
    assert sum(p.numel() for p in ema.parameters()) == EDM_PARAMS[name]
    assert data["loss_fn"]["class_name"] == "EDMLoss" and data["dataset_kwargs"] == ds
    assert (data["augment_pipe"] is None) == (aug is None)
    if aug is not None:
        assert data["augment_pipe"]["init_kwargs"] == aug and data["augment_pipe"]["attributes"]["p"] == aug["p"]
    dst = convert_edm_pickle(path, tmp_path / f"{name}.safetensors")  # what rule convert_checkpoint does
    header = read_header(dst)
    assert architecture_of(header["init_kwargs"], header["class"]) == _registry()["checkpoints"][name]["architecture"]
    return ema, load_model(dst)


def test_edm_cifar10_uncond_pickle_loads_and_converts(fx, tmp_path):
    ema, net = _check_edm(fx("edm-cifar10-uncond"), "edm-cifar10-uncond", tmp_path)
    x, sigma = torch.randn(2, 3, 32, 32), torch.tensor([80.0, 0.5])
    with torch.no_grad():
        y = net(x, sigma)
    assert y.shape == x.shape and torch.isfinite(y).all() and torch.equal(y, ema(x, sigma))


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k in sf.EDM_CHECKPOINTS if k != "edm-cifar10-uncond"])
def test_edm_pickles_load_and_convert(tmp_path, name):
    _check_edm(sf.write_edm_checkpoint(tmp_path, name), name, tmp_path)


@pytest.mark.parametrize("tf_converted", [False, True])
def test_stylegan2ada_pickle_converts(fx, tmp_path, tf_converted):
    from d2o.edm.persistence import read_pickle_records
    from d2o.stylegan2ada_checkpoint import convert_stylegan2ada_discriminator, load_stylegan2_checkpoint
    path = fx("stylegan2ada-cifar10", tf_converted=tf_converted)
    assert sorted(read_pickle_records(path)) == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    D = load_stylegan2_checkpoint(convert_stylegan2ada_discriminator(path, tmp_path / "D.safetensors"), 32, 10)
    n = sum(p.numel() for p in D.parameters())
    assert n == 23_089_664 if not tf_converted else n < 23_089_664  # TF-converted: no mapping fc layers
    x, c = torch.randn(4, 3, 32, 32), torch.nn.functional.one_hot(torch.arange(4), 10).float()
    D = load_stylegan2_checkpoint(tmp_path / "D.safetensors", 32, 10)
    with torch.no_grad():
        (logits,), = D(x, c)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------- datasets

def _spec(name, sha256=None, **expected):
    """The registry's dataset entry with the fixture's counts (and, for a download, the fixture's SHA-256)."""
    spec = copy.deepcopy(_registry()["datasets"][name])
    spec["expected"] = expected
    if sha256:
        spec["source"]["sha256"] = sha256
    return spec


def test_cifar10_tarball_reads_like_the_real_one(fx, tmp_path):
    from d2o.datasets import ImageZipDataset, iter_cifar10, prepare_dataset
    path = fx("cifar10")
    pairs = list(iter_cifar10(path))
    assert len(pairs) == 5 * 20  # n = 20 images per batch
    assert all(img.shape == (32, 32, 3) and img.dtype == np.uint8 for img, _ in pairs)
    assert sorted({int(y) for _, y in pairs}) == list(range(10))
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["cifar-10-batches-py"] + [f"cifar-10-batches-py/{n}" for n in (
            "batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
            "readme.html", "test_batch")]
        raw = tar.extractfile("cifar-10-batches-py/data_batch_1").read()
        meta = pickle.loads(tar.extractfile("cifar-10-batches-py/batches.meta").read(), encoding="latin1")
    d = pickle.loads(raw, encoding="bytes")  # the CIFAR-10 page's Python 3 recipe
    assert set(d) == {b"data", b"labels", b"batch_label", b"filenames"} and d[b"data"].shape == (20, 3072)
    assert d[b"data"].dtype == np.uint8 and d[b"batch_label"] == b"training batch 1 of 5"
    assert meta["label_names"][:2] == ["airplane", "automobile"] and meta["num_vis"] == 3072
    assert not any(op.name in ("BINUNICODE", "SHORT_BINUNICODE") for op, _, _ in pickletools.genops(raw))  # py2 str
    n = prepare_dataset(_spec("cifar10", sf.sha256_path(path), images=100, classes=10), tmp_path / "c.zip", path, name="cifar10")
    ds = ImageZipDataset(tmp_path / "c.zip")
    assert n == len(ds) == 100 and ds[0].shape == (3, 32, 32) and sorted(set(ds.labels.tolist())) == list(range(10))


@pytest.mark.parametrize("name,count,classes", [("afhqv2", 18, None), ("ffhq", 6, None), ("imagenet64", 12, 3)])
def test_image_folders_prepare_into_edm_zips(fx, tmp_path, name, count, classes):
    from d2o.datasets import ImageZipDataset, prepare_dataset
    folder = fx(name)
    spec = _spec(name, images=count, **({"classes": classes} if classes else {}))
    assert folder.as_posix().endswith(spec["source"]["path"].removeprefix("resources/downloads/"))
    prepare_dataset(spec, tmp_path / "d.zip", folder, name=name)
    ds = ImageZipDataset(tmp_path / "d.zip")
    assert len(ds) == count and ds[0].shape == (3, spec["resolution"], spec["resolution"])
    assert (ds.labels is None) == (classes is None)
    if classes:
        assert sorted(set(ds.labels.tolist())) == list(range(classes))


def test_fid_refs_are_edm_statistics(fx):
    from d2o.metrics import load_stats
    stats = {k: load_stats(fx(f"fid-refs/{k}")) for k in ("cifar10", "imagenet64")}
    for s in stats.values():
        assert s["mu"].shape == (2048,) and s["sigma"].shape == (2048, 2048) and s["sigma"].dtype == np.float64
        assert np.array_equal(s["sigma"], s["sigma"].T) and np.linalg.eigvalsh(s["sigma"]).min() > 0
    with np.load(fx("fid-refs/cifar10")) as z:
        assert z.files == ["mu", "sigma"] and z["mu"].dtype == np.float64


@pytest.mark.slow
def test_fid_between_fid_refs_is_finite(fx):  # scipy's sqrtm of 2048 x 2048: ~25 s each on 2 cores
    from d2o.metrics import fid_from_stats, load_stats
    a, b = load_stats(fx("fid-refs/cifar10")), load_stats(fx("fid-refs/imagenet64"))
    assert abs(fid_from_stats(a, a)) < 1e-6 and 0 < fid_from_stats(a, b) < 1e4


def test_pr_ref_is_a_guided_diffusion_reference_batch(fx):
    from d2o.metrics import as_image_dataset
    with np.load(fx("pr-refs/imagenet64"), allow_pickle=False) as z:
        assert z.files == ["mu", "sigma", "mu_s", "sigma_s", "arr_0"]
        assert z["sigma"].shape == (2048, 2048) and z["sigma_s"].shape == (2023, 2023)
        images = z["arr_0"]  # what workflow/scripts/metric.py reads
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    ds = as_image_dataset(images)
    assert len(ds) == 40 and ds[0].shape == (3, 64, 64) and ds[0].dtype == torch.uint8


# ---------------------------------------------------------------------------------------------- write_all

def test_write_all_hashes_and_is_deterministic(tmp_path):
    names = ["class_embedding", "cifar10", "afhqv2", "imagenet64", "fid-refs/cifar10", "tf_efficientnet_lite0",
             "edm-cifar10-cond", "stylegan2ada-cifar10"]
    a, b = sf.write_all(tmp_path / "a", names), sf.write_all(tmp_path / "b", names)
    assert list(a) == names and a["class_embedding"]["path"].name == "tf_efficientnet_lite0.pkl"
    for name in names:
        p = a[name]["path"]
        if p.is_file():
            assert a[name]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert a[name]["sha256"] == b[name]["sha256"], name
    with pytest.raises(KeyError, match="unknown fixtures"):
        sf.write_all(tmp_path, ["edm-cifar100"])


def test_registry_names_every_fixture():
    reg = _registry()
    names = {*reg["checkpoints"], *reg["datasets"], *reg.get("weights", {}), *(f"{kind}/{d}" for d, s in reg[
        "datasets"].items() for key, kind in (("fid_ref", "fid-refs"), ("pr_ref", "pr-refs")) if key in s)}
    assert set(sf.FIXTURES) <= names | {"inception-v3-compat", "clip-vit-b-32", "vgg16", "vgg16_bn",
                                        "tf_efficientnet_lite0", "deit_base_distilled_patch16_224"}
    assert {*reg["checkpoints"], *reg["datasets"]} <= set(sf.FIXTURES)


# ---------------------------------------------------------------------------------------------- d2o.weights

@pytest.mark.parametrize("name,kind", [("vgg16_bn", "torchvision"), ("vgg16", "torchvision"),
                                       ("tf_efficientnet_lite0", "timm"),
                                       ("deit_base_distilled_patch16_224", "timm"),
                                       ("inception-v3-compat", "torch-fidelity-inception"),
                                       ("clip-vit-b-32", "clip-torchscript"),
                                       ("in-embedding-tf-efficientnet-lite0", "class-embedding")])
@pytest.mark.filterwarnings("ignore")
def test_project_weight_converter_accepts_the_upstream_files(fx, tmp_path, name, kind):
    weights = pytest.importorskip("d2o.weights")
    meta = weights.convert_weight(name, kind, fx(name), tmp_path / f"{name}.safetensors")
    assert meta["source_sha256"] == sf.sha256_path(fx(name))


# ---------------------------------------------------------------------------------------------- d2o.download

@pytest.mark.parametrize("name,content", [
    ("edm-cifar10-uncond", "pickle"), ("stylegan2ada-cifar10", "pickle"), ("cifar10", "tar"),
    ("fid-refs/cifar10", "npz"), ("pr-refs/imagenet64", "npz"), ("in-embedding-tf-efficientnet-lite0", "class-embedding"),
    ("vgg16", "torchvision"), ("tf_efficientnet_lite0", "timm"), ("deit_base_distilled_patch16_224", "timm"),
    ("inception-v3-compat", "torch-fidelity-inception"), ("clip-vit-b-32", "clip-torchscript")])
@pytest.mark.filterwarnings("ignore")
def test_first_download_from_file_url_validates_and_pins(fx, tmp_path, name, content):
    """rules' download step with sha256 "" (trust on first download): the content check passes and the hash is pinned."""
    download = pytest.importorskip("d2o.download")
    if content not in getattr(download, "VALIDATORS", {}):
        pytest.skip(f"d2o.download has no content check {content!r}")
    src, lock = fx(name), tmp_path / "lock.yaml"
    dest = download.download(src.as_uri(), tmp_path / src.name, lock_file=lock, key=name, progress=False,
                             validate=download.VALIDATORS[content])
    assert download.read_lock(lock)[name]["sha256"] == sf.sha256_path(src) == sf.sha256_path(dest)
