"""d2o.metrics through torch-fidelity 0.4.0, offline (metrics-protocols.md §7): demo extractor, random-weight
Inception and a tiny random CLIP built at test time in a temporary folder."""

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from d2o import metrics as M

_spec = importlib.util.spec_from_file_location("helpers_fidelity", Path(__file__).with_name("helpers_fidelity.py"))
helpers_fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers_fidelity)

DEMO = dict(feature_extractor=M.DEMO_EXTRACTOR, layer="feat", device="cpu")


@pytest.fixture(autouse=True)
def offline_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # any download attempt lands here, never in ~


def images(n, seed=0, size=32, shift=0):
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 200, (n, 1, 1, 3)) + rng.randint(0, 56, (n, size, size, 3))
    return np.clip(base + shift, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ FID formula


def test_fid_from_stats_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.RandomState(0)
    mu1, mu2 = rng.randn(16), rng.randn(16)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = M.fid_from_stats({"mu": mu1.astype(np.float32), "sigma": np.diag(a)}, {"mu": mu2, "sigma": np.diag(b)})
    assert abs(got - expected) < 1e-5 * expected
    assert abs(M.fid_from_stats({"mu": mu1, "sigma": np.diag(a)}, {"mu": mu1, "sigma": np.diag(a)})) < 1e-10
    with pytest.raises(ValueError, match="feature sizes"):
        M.fid_from_stats({"mu": mu1, "sigma": np.diag(a)}, {"mu": mu2[:8], "sigma": np.diag(b[:8])})


def test_fid_from_stats_full_covariance_matches_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.RandomState(1)
    A, B = rng.randn(12, 40), rng.randn(12, 40)
    s1, s2 = A @ A.T / 40, B @ B.T / 40 + 0.1 * np.eye(12)
    mu1, mu2 = rng.randn(12), rng.randn(12)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert abs(M.fid_from_stats({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}) - ref) < 1e-8


def test_save_load_stats_and_edm_npz(tmp_path):
    s = {"mu": np.arange(3.0), "sigma": np.eye(3)}
    M.save_stats(s, tmp_path / "a.npz")
    back = M.load_stats(tmp_path / "a.npz")
    assert back["mu"].dtype == np.float64 and np.array_equal(back["sigma"], s["sigma"])
    np.savez(tmp_path / "edm.npz", mu=np.ones(3, np.float32), sigma=np.eye(3, dtype=np.float32))  # fid-refs layout
    assert M.load_stats(tmp_path / "edm.npz")["mu"].dtype == np.float64
    np.savez(tmp_path / "bad.npz", m=np.ones(3))
    with pytest.raises(KeyError, match="bad.npz"):
        M.load_stats(tmp_path / "bad.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "bad.npz", "edm.npz"]  # no temporaries left


# ------------------------------------------------------------------ datasets and subsets


def test_uint8_dataset_layouts():
    nhwc = images(4, size=8)
    a, b = M.UInt8ImageDataset(nhwc), M.UInt8ImageDataset(nhwc.transpose(0, 3, 1, 2))
    assert a[2].shape == (3, 8, 8) and a[2].dtype == torch.uint8 and torch.equal(a[2], b[2])
    gray = M.UInt8ImageDataset(nhwc[..., :1])
    assert torch.equal(gray[0][1], gray[0][0]) and gray[0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="layout"):
        M.UInt8ImageDataset(np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        M.UInt8ImageDataset(np.zeros((2, 8, 8, 3), np.float32))


def test_zip_path_reads_edm_layout(tmp_path):
    imgs = images(3, size=8)
    path = tmp_path / "ds.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i, img in enumerate(imgs):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format="png", compress_level=0)
            z.writestr(f"{i:08d}"[:5] + f"/img{i:08d}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": None}))
    ds = M.as_image_dataset(path)
    assert len(ds) == 3 and all(torch.equal(ds[i], torch.from_numpy(imgs[i]).permute(2, 0, 1)) for i in range(3))
    import pickle
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1], ds[1])


def test_select_subset_follows_edm_rule():
    ds = M.UInt8ImageDataset(images(10, size=4))
    sub = M.select_subset(ds, 4, seed=0)
    idx = np.arange(10)
    np.random.RandomState(0).shuffle(idx)
    assert sub.indices == sorted(idx[:4].tolist())
    assert M.select_subset(ds, 10) is ds and M.select_subset(ds, None) is ds
    with pytest.raises(ValueError, match="allow_fewer"):
        M.select_subset(ds, 11)
    assert M.select_subset(ds, 11, allow_fewer=True) is ds


# ------------------------------------------------------------------ demo extractor end to end


def test_demo_extractor_deterministic_any_resolution():
    fe1 = M.DemoRandomCNN(M.DEMO_EXTRACTOR, ["feat", "logits"])
    fe2 = M.DemoRandomCNN(M.DEMO_EXTRACTOR, ["feat"])
    x = torch.from_numpy(images(3, size=64)).permute(0, 3, 1, 2).contiguous()
    feat, logits = fe1(x)
    assert feat.shape == (3, 128) and logits.shape == (3, 10) and torch.equal(fe2(x)[0], feat)
    assert feat.std(dim=0).mean() > 1e-3
    M.register_demo_extractor()  # idempotent
    off, paper = M.extractor_settings("demo"), M.extractor_settings("inception")
    assert off["label"] == M.DEMO_LABEL and paper == dict(
        feature_extractor="inception-v3-compat", layer_fid="2048", layer_isc="logits_unbiased", layer_prc="2048",
        clip_extractor="clip-vit-b-32", layer_clip="clip", label="paper protocol")


def test_compute_stats_demo():
    ds = M.UInt8ImageDataset(images(20))
    s = M.compute_stats(ds, M.DEMO_EXTRACTOR, "feat", batch_size=7, device="cpu")
    assert s["mu"].shape == (128,) and s["sigma"].shape == (128, 128)
    assert s["mu"].dtype == np.float64 and s["sigma"].dtype == np.float64
    f = M.extract_features(ds, M.DEMO_EXTRACTOR, ["feat"], device="cpu")["feat"].double().numpy()
    assert np.allclose(s["mu"], f.mean(0)) and np.allclose(s["sigma"], np.cov(f, rowvar=False))


def test_compute_fid_demo_end_to_end(tmp_path):
    a, b = images(30, seed=0), images(30, seed=0, shift=60)
    same = M.compute_fid(a, a, num_samples=30, **DEMO)
    assert abs(same["value"]) < 1e-6
    assert same["label"] == M.DEMO_LABEL and same["num_samples"] == 30 and same["feature_extractor"] == M.DEMO_EXTRACTOR
    json.dumps(same)  # JSON-ready
    shifted = M.compute_fid(b, a, num_samples=30, **DEMO)["value"]
    assert shifted > 0.1
    M.save_stats(M.compute_stats(a, M.DEMO_EXTRACTOR, "feat", device="cpu"), tmp_path / "ref.npz")
    from_npz = M.compute_fid(b, tmp_path / "ref.npz", num_samples=30, **DEMO)
    assert from_npz["reference"] == str(tmp_path / "ref.npz") and abs(from_npz["value"] - shifted) < 1e-9
    sub = M.compute_fid(np.concatenate([b, b]), a, num_samples=30, **DEMO)
    assert sub["num_samples"] == 30 and sub["value"] > 0.1
    with pytest.raises(ValueError, match="allow_fewer"):
        M.compute_fid(b, a, num_samples=50, **DEMO)
    gen = M.compute_fid_generated(a, b, num_samples=30, **DEMO)
    assert abs(gen["value"] - shifted) < 1e-6 * shifted and gen["settings"]["ref_num_samples"] == 30


def test_compute_is_demo():
    rng = np.random.RandomState(0)
    varied = np.repeat(np.repeat(rng.randint(0, 256, (40, 4, 4, 3)), 8, axis=1), 8, axis=2).astype(np.uint8)
    uniform = np.full((40, 32, 32, 3), 128, np.uint8)
    r = M.compute_is(varied, splits=4, feature_extractor=M.DEMO_EXTRACTOR, layer="logits", device="cpu")
    assert r["metric"] == "is" and r["settings"]["shuffle"] is False and r["num_samples"] == 40
    assert 1.0 < r["value"] < 10 and r["std"] >= 0
    u = M.compute_is(uniform, splits=4, feature_extractor=M.DEMO_EXTRACTOR, layer="logits", device="cpu")
    assert abs(u["value"] - 1.0) < 1e-9 and r["value"] > u["value"] + 1e-3


def test_compute_pr_demo():
    a, far = images(20, seed=1), np.full((20, 32, 32, 3), 255, np.uint8) - images(20, seed=2) // 8
    same = M.compute_pr(a, a, feature_extractor=M.DEMO_EXTRACTOR, layer="feat", device="cpu")
    assert same["value"]["precision"] == 1.0 and same["value"]["recall"] == 1.0 and same["settings"]["k"] == 3
    apart = M.compute_pr(far, a, feature_extractor=M.DEMO_EXTRACTOR, layer="feat", device="cpu")
    assert apart["value"]["precision"] < 0.5 and apart["value"]["recall"] < 0.5


def test_unknown_fidelity_kwarg_raises():
    with pytest.raises(TypeError, match="isc_split"):
        M.calculate_metrics(device="cpu", input1=M.UInt8ImageDataset(images(4)), isc=True, isc_split=2)
    with pytest.raises(TypeError, match="kid_degree"):
        M.check_fidelity_kwargs({"kid_degree": 3})
    M.check_fidelity_kwargs({"isc_splits": 2, "cuda": False})


# ------------------------------------------------------------------ CLIP-FID preprocessing and random weights


def test_clip_preprocessing_bicubic_shorter_side_center_crop():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (32, 48, 3)).astype(np.uint8)  # H=32 < W=48
    ds = M.CleanFIDClipResize(M.UInt8ImageDataset(img[None], layout="NHWC"))
    out = ds[0]
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    big = np.asarray(PIL.Image.fromarray(img).resize((336, 224), PIL.Image.BICUBIC))
    assert torch.equal(out, torch.from_numpy(big[:, 56:280].copy()).permute(2, 0, 1))
    bilinear = np.asarray(PIL.Image.fromarray(img).resize((336, 224), PIL.Image.BILINEAR))[:, 56:280]
    assert not np.array_equal(out.permute(1, 2, 0).numpy(), bilinear)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_clip_fid_with_tiny_random_clip(tmp_path):
    weights = helpers_fidelity.make_tiny_clip(tmp_path)
    a, b = images(6, seed=0), images(6, seed=0, shift=80)
    kw = dict(num_samples=6, weights_path=weights, device="cpu")
    same = M.compute_clip_fid(a, a, **kw)
    assert abs(same["value"]) < 1e-6 and same["metric"] == "clip_fid" and same["layer"] == "clip"
    assert "bicubic" in same["settings"]["preprocess"] and same["label"] == "paper protocol"
    assert M.compute_clip_fid(b, a, **kw)["value"] > 1e-4


@pytest.mark.slow  # ~10-40 s on 2 CPU cores (Inception at 299 px, ~12 img/s)
def test_inception_path_with_random_weights(tmp_path):
    weights = helpers_fidelity.make_random_inception_weights(tmp_path)
    a = images(8, seed=3)
    s = M.compute_stats(a, weights_path=weights, device="cpu", batch_size=8)
    assert s["mu"].shape == (2048,) and np.trace(s["sigma"]) > 1e-3  # features did not vanish
    r = M.compute_fid(a, s, num_samples=8, weights_path=weights, device="cpu")
    assert abs(r["value"]) < 1e-4 and r["label"] == "paper protocol" and r["layer"] == "2048"


def test_precision_recall_fp32_is_torch_fidelitys_and_fp16_is_the_evaluators():
    """Our float32 P/R decides as torch-fidelity's prc on the same features; the float16 path (guided-diffusion's
    evaluator arithmetic, the paper's Table 6) rounds distances like float16 and stays within a few points of it."""
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    g = torch.Generator().manual_seed(0)
    ref = 3 * torch.randn(300, 64, generator=g).abs()                      # pool_3-like: non-negative, norms ~ 30
    smp = 3 * (torch.randn(400, 64, generator=g) + 0.3).abs()
    ours = M.precision_recall(ref, smp, 3, "fp32", block=128)
    tf_p, tf_r = calculate_precision_recall_part(smp, ref, neighborhood=3, batch_size=128)
    assert ours["precision"] == pytest.approx(tf_p, abs=1e-6) and ours["recall"] == pytest.approx(tf_r, abs=1e-6)  # its float32 mean
    fp16 = M.precision_recall(ref, smp, 3, "fp16", block=128)
    assert 0 < abs(fp16["precision"] - ours["precision"]) + abs(fp16["recall"] - ours["recall"]) < 0.05
    d16 = M._pairwise_sq_distances(ref[:5], smp[:7], "fp16")
    d32 = M._pairwise_sq_distances(ref[:5], smp[:7], "fp32")
    assert d16.dtype == torch.float32 and torch.equal(d16, d16.half().float()) and not torch.equal(d16, d32)
    assert torch.allclose(d16, d32, rtol=2e-2, atol=2.0)
    assert M.precision_recall(ref, smp, 3, "fp16", block=128) == M.precision_recall(ref, smp, 3, "fp16", block=1000)


def test_pr_blocks_that_overflow_float16_fall_back_to_float32():
    big = torch.full((4, 8), 300.0)                                        # ||u||^2 = 720000 > float16's 65504
    d = M._pairwise_sq_distances(big, big + torch.arange(8.0), "fp16")
    torch.testing.assert_close(d, M._pairwise_sq_distances(big, big + torch.arange(8.0), "fp32"))
