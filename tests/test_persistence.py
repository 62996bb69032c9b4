"""d2o.edm.persistence: EDM training pickles are read without running code from them (facts sheet §1.1)."""

import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_edm_pickle import (  # noqa: E402
    EasyDict, EDMPickler, Persistent, make_edm_fixture, named_global, write_edm_pickle,
)

from d2o.edm import model_io  # noqa: E402
from d2o.edm.persistence import EDMPickleError, UnsafePickleError, load_edm_pickle, read_pickle_records  # noqa: E402

TINY = dict(img_resolution=8, img_channels=3, label_dim=10, model_type="SongUNet", embedding_type="positional",
            encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
            model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0, augment_dim=9)


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    net = model_io.build("EDMPrecond", **TINY)
    with torch.no_grad():  # EDM zero-inits some output layers; make every weight distinct
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="module")
def tiny():
    return _tiny_net()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_matches_weights_and_forward(tmp_path, tiny, protocol):
    path = write_edm_pickle(tmp_path / "snap.pkl", "EDMPrecond", TINY, tiny.state_dict(), module=tiny, protocol=protocol,
                            augment_pipe=dict(class_name="AugmentPipe", init_kwargs=dict(p=0.12, xflip=1e8),
                                              attributes=dict(p=0.12, xflip=1e8, scale=1.0)))
    data = load_edm_pickle(path)
    ema = data["ema"]
    assert type(ema).__name__ == "EDMPrecond" and not ema.training
    assert not any(p.requires_grad for p in ema.parameters())
    assert all(p.device.type == "cpu" for p in ema.parameters())
    ref, got = tiny.state_dict(), ema.state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]) and got[k].dtype == ref[k].dtype, k
    assert ema._d2o_init == ("EDMPrecond", TINY)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.4, 7.0])
    labels = torch.nn.functional.one_hot(torch.tensor([2, 5]), 10).float()
    assert torch.equal(ema(x, sigma, labels), tiny(x, sigma, labels))
    assert data["loss_fn"]["class_name"] == "EDMLoss" and data["loss_fn"]["attributes"]["sigma_data"] == 0.5
    assert data["augment_pipe"]["init_kwargs"] == dict(p=0.12, xflip=1e8)
    assert data["dataset_kwargs"]["path"] == "datasets/tiny.zip"


def test_easydict_numpy_and_views(tmp_path, tiny):
    """dnnlib.util.EasyDict -> dict; numpy arrays/scalars (numpy 2 and 1.x names); tensor views keep their offset."""
    base = torch.arange(10.0)
    extra = dict(stats=EasyDict(mu=np.arange(4, dtype=np.float64), n=np.int64(7)), views=[base, base[2:5]])
    path = write_edm_pickle(tmp_path / "snap.pkl", "EDMPrecond", TINY, tiny.state_dict(), module=tiny,
                            extra_items=extra, dataset_kwargs=EasyDict(path="d.zip", use_labels=True))
    data = load_edm_pickle(path)
    assert type(data["stats"]) is dict and type(data["dataset_kwargs"]) is dict
    np.testing.assert_array_equal(data["stats"]["mu"], np.arange(4.0))
    assert data["stats"]["n"] == 7
    a, b = data["views"]
    assert torch.equal(a, base) and torch.equal(b, base[2:5])  # a view with offset
    assert b.shape == (3,) and b.storage_offset() == 2  # plain pickle writes each view's whole storage
    # numpy 1.x pickles (EDM 2022) name numpy.core.multiarray; protocol 2 GLOBALs are text, so rename in place
    buf = io.BytesIO()
    EDMPickler(buf, protocol=2).dump(dict(a=np.arange(3, dtype=np.float32), s=np.float32(2.5)))
    old = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    (tmp_path / "np1.pkl").write_bytes(old)
    got = read_pickle_records(tmp_path / "np1.pkl")
    np.testing.assert_array_equal(got["a"], np.arange(3, dtype=np.float32))
    assert got["s"] == np.float32(2.5) and got["s"].dtype == np.float32


def test_unknown_ema_class_and_mismatched_weights(tmp_path, tiny):
    sd = tiny.state_dict()
    path = write_edm_pickle(tmp_path / "a.pkl", "MysteryNet", TINY, sd, module=tiny)
    with pytest.raises(EDMPickleError, match="MysteryNet"):
        load_edm_pickle(path)
    sd = dict(sd)
    name = "model.map_layer0.weight"
    sd[name] = torch.zeros(sd[name].shape[0], sd[name].shape[1] + 1)
    path = write_edm_pickle(tmp_path / "b.pkl", "EDMPrecond", TINY, sd, module=tiny)
    with pytest.raises(EDMPickleError, match=name.replace(".", r"\.")):
        load_edm_pickle(path)


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.call", "posix.system"])
def test_code_execution_is_refused(tmp_path, tiny, target):
    sentinel = tmp_path / "pwned"
    module, name = target.rsplit(".", 1)
    payload = f"open({str(sentinel)!r}, 'w').write('x')" if name == "eval" else f"touch {sentinel}"
    if name == "call":
        payload = ["touch", str(sentinel)]
    evil = _Evil(named_global(module, name), payload)
    path = write_edm_pickle(tmp_path / "evil.pkl", "EDMPrecond", TINY, tiny.state_dict(), module=tiny,
                            extra_items=dict(zzz=evil))
    with pytest.raises(UnsafePickleError, match=rf"'{target}'") as err:
        load_edm_pickle(path)
    assert str(path) in str(err.value)
    assert not sentinel.exists()


def test_plain_pickle_would_execute_the_payload(tmp_path):
    """Control for the test above: the evil stream does run under pickle.load, and not under load_edm_pickle."""
    sentinel = tmp_path / "ran"
    buf = io.BytesIO()
    EDMPickler(buf, protocol=4).dump(dict(ema=None, x=_Evil(named_global("builtins", "exec"),
                                                            f"open({str(sentinel)!r}, 'w').close()")))
    (tmp_path / "e.pkl").write_bytes(buf.getvalue())
    with pytest.raises(UnsafePickleError, match="'builtins.exec'"):
        load_edm_pickle(tmp_path / "e.pkl")
    assert not sentinel.exists()
    pickle.loads(buf.getvalue())
    assert sentinel.exists()


def test_build_on_foreign_object_is_refused(tmp_path):
    """A BUILD (setstate) aimed at an allowed function must not patch it; on an OrderedDict it is fine."""
    ok = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R}\x8c\x01aK\x01sb."
    (tmp_path / "a.pkl").write_bytes(ok)
    assert read_pickle_records(tmp_path / "a.pkl").a == 1
    bad = b"\x80\x04\x8c\x0ctorch._utils\x8c\x12_rebuild_tensor_v2\x93}\x8c\x01aK\x01sb."
    (tmp_path / "b.pkl").write_bytes(bad)
    with pytest.raises(UnsafePickleError, match="BUILD"):
        load_edm_pickle(tmp_path / "b.pkl")


def test_persistent_meta_is_validated(tmp_path):
    rec = Persistent("EDMPrecond", {})
    rec.meta["version"] = 5
    buf = io.BytesIO()
    EDMPickler(buf, protocol=4).dump(dict(ema=rec))
    (tmp_path / "v.pkl").write_bytes(buf.getvalue())
    with pytest.raises(EDMPickleError, match="version=5"):
        load_edm_pickle(tmp_path / "v.pkl")


@pytest.mark.parametrize("keep", [0.5, 0.999, 10])
def test_truncated_file_gives_clear_error(tmp_path, tiny, keep):
    path = write_edm_pickle(tmp_path / "snap.pkl", "EDMPrecond", TINY, tiny.state_dict(), module=tiny)
    data = path.read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[:int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(EDMPickleError, match="truncated or corrupt") as err:
        load_edm_pickle(cut)
    assert str(cut) in str(err.value)


def test_reads_pickle_written_by_edm_code(tmp_path):
    """Strongest evidence: a snapshot pickled by EDM's own code. Needs a local EDM checkout (never committed):
    set D2O_EDM_SRC to it (e.g. `git archive` of NVlabs/edm into /tmp/edm_src); skipped otherwise."""
    edm = Path(os.environ.get("D2O_EDM_SRC", "/tmp/edm_src"))
    if not (edm / "torch_utils" / "persistence.py").exists():
        pytest.skip("no EDM checkout (set D2O_EDM_SRC)")
    src = make_edm_fixture(edm, tmp_path / "edm.pkl")
    assert b"torch_utils.persistence" in src.read_bytes()
    ref = torch.load(str(src) + ".ref.pt", weights_only=False)
    data = load_edm_pickle(src)
    ema = data["ema"]
    got = ema.state_dict()
    assert list(got) == list(ref["sd"]) and all(torch.equal(got[k], ref["sd"][k]) for k in got)
    assert ema._d2o_init == ("EDMPrecond", ref["kw"])
    torch.testing.assert_close(ema(ref["x"], ref["s"], ref["c"]), ref["y"], rtol=1e-5, atol=1e-5)
    assert data["loss_fn"]["class_name"] == "EDMLoss" and data["augment_pipe"]["init_kwargs"]["p"] == 0.12
