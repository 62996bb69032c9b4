"""The demo's trained CNNs (d2o.demo_cnn): deterministic, it reads the shapes (accuracy far above
chance on the demo dataset it never saw), and it is torch-fidelity's "d2o-demo-cnn" for every demo metric."""
import numpy as np
import torch

from d2o import metrics as M
from d2o.datasets import make_shapes
from d2o.demo_cnn import load_demo_cnn, summary_of, train_demo_cnn

SPEC = dict(dataset="shapes16", images=2048, steps=300, batch=64, lr=0.003, seed=1)  # ~9 s; the demo trains longer


def test_the_attributes_leave_the_dataset_unchanged():
    a, la = make_shapes(64, 16, seed=0)
    b, lb, attrs = make_shapes(64, 16, seed=0, attributes=True)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert attrs["fg"].shape == (64, 3) and attrs["center"].shape == (64, 2) and (attrs["radius"] > 0.1).all()


def test_trained_deterministically_and_reads_the_shapes(tmp_path):
    torch.set_num_threads(1)
    ev, el = make_shapes(512, 16, seed=0)
    s = train_demo_cnn(SPEC, 16, ev, el, tmp_path / "a.safetensors")
    train_demo_cnn(SPEC, 16, ev, el, tmp_path / "b.safetensors")
    a, b = (load_demo_cnn(tmp_path / f).state_dict() for f in ("a.safetensors", "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()  # one metadata key
    assert s["shape_accuracy"] > 0.5 and summary_of(tmp_path / "a.safetensors") == s and "demo" in s["label"]
    net = load_demo_cnn(tmp_path / "a.safetensors")
    assert net(torch.from_numpy(ev[:4]).permute(0, 3, 1, 2))["feat"].shape == (4, 128)
    # through torch-fidelity, as every demo metric: the same features; noise is far from shapes, shapes near shapes
    feats = M.extract_features(ev[:8], M.DEMO_TRAINED, ("feat", "logits"), weights_path=tmp_path / "a.safetensors",
                               device="cpu")
    assert feats["feat"].shape == (8, 128) and feats["logits"].shape == (8, 4)
    noise = np.random.default_rng(0).integers(0, 256, (256, 16, 16, 3), dtype=np.uint8)
    ref = M.compute_stats(ev[:256], M.DEMO_TRAINED, "feat", weights_path=tmp_path / "a.safetensors", device="cpu")
    kw = dict(num_samples=256, feature_extractor=M.DEMO_TRAINED, layer="feat", weights_path=tmp_path / "a.safetensors",
              device="cpu")
    shapes = M.compute_fid(ev[256:512], ref, **kw)["value"]
    assert M.compute_fid(noise, ref, **kw)["value"] > 5 * shapes
    assert M.extractor_settings("demo-trained")["feature_extractor"] == M.DEMO_TRAINED
