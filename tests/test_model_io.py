"""d2o.edm.model_io: the project's safetensors + JSON-header network format, and EDM pickle conversion."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from helpers_edm_pickle import write_edm_pickle  # noqa: E402

from d2o.edm import model_io  # noqa: E402

TINY = dict(img_resolution=8, img_channels=3, label_dim=0, model_type="DhariwalUNet", model_channels=16,
            channel_mult=[1, 2], channel_mult_emb=2, num_blocks=1, attn_resolutions=[4], dropout=0.0)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    net = model_io.build("EDMPrecond", **TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net.eval()


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_roundtrip_header_and_strict_weights(tmp_path, net):
    path = model_io.save_model(net, tmp_path / "m.safetensors", extra=dict(experiment="demo", label="x"))
    assert not list(tmp_path.glob(".m.safetensors.*"))  # no temporary left behind
    header = model_io.read_header(path)
    assert header["class"] == "EDMPrecond" and header["format_version"] == model_io.FORMAT_VERSION
    assert header["init_kwargs"] == TINY and header["extra"] == dict(experiment="demo", label="x")
    back = model_io.load_model(path)
    assert type(back) is type(net) and not back.training and not any(p.requires_grad for p in back.parameters())
    assert _same(back, net)
    x, s = torch.randn(2, 3, 8, 8), torch.tensor([1.0, 20.0])
    assert torch.equal(back(x, s), net(x, s))
    model_io.save_model(back, tmp_path / "again.safetensors")  # a loaded model can be saved again


def test_save_requires_init_kwargs(tmp_path):
    with pytest.raises(ValueError, match="does not record its init kwargs"):
        model_io.save_model(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_load_is_strict(tmp_path, net):
    path = model_io.save_model(net, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=dropped.replace(".", r"\.")):
        model_io.load_model(tmp_path / "short.safetensors")
    save_file(tensors, str(tmp_path / "nohdr.safetensors"))
    with pytest.raises(ValueError, match="d2o_header"):
        model_io.load_model(tmp_path / "nohdr.safetensors")


def test_load_network_dispatches_on_content_and_converts(tmp_path, net):
    pkl = write_edm_pickle(tmp_path / "snap.bin", "EDMPrecond", TINY, net.state_dict(), module=net)
    st = model_io.save_model(net, tmp_path / "model.pkl")  # misleading suffixes on purpose
    assert _same(model_io.load_network(pkl), net)
    assert _same(model_io.load_network(st), net)
    dst = model_io.convert_edm_pickle(pkl, tmp_path / "conv.safetensors", extra=dict(sha256="ab" * 32))
    header = model_io.read_header(dst)
    assert header["extra"]["source_checkpoint"] == str(pkl) and header["extra"]["sha256"] == "ab" * 32
    assert header["init_kwargs"] == json.loads(json.dumps(TINY))
    assert _same(model_io.load_model(dst), net)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="neither"):
        model_io.load_network(tmp_path / "junk")


def test_build_rejects_unknown_class():
    with pytest.raises(KeyError, match="NoSuchNet"):
        model_io.build("training.networks.NoSuchNet")


def test_a_header_only_file_builds_the_network_fresh_and_never_loads_as_weights(tmp_path, net):
    path = model_io.save_header("EDMPrecond", TINY, tmp_path / "h.safetensors", extra={"checkpoint": "x"})
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == []                                # no tensors
    header = model_io.read_header(path)
    assert header["init_kwargs"] == json.loads(json.dumps(TINY)) and header["extra"]["header_only"] is True
    torch.manual_seed(3)
    fresh = model_io.build_fresh(path)
    torch.manual_seed(3)
    assert _same(fresh, model_io.build("EDMPrecond", **TINY))     # the class's own init, at the current seed
    model_path = model_io.save_model(net, tmp_path / "m.safetensors")
    torch.manual_seed(3)
    assert _same(model_io.build_fresh(model_path), fresh)         # a model file's header: its weights are not read
    with pytest.raises(ValueError, match="a header-only file .*build_fresh"):
        model_io.load_model(path)
    with pytest.raises(KeyError, match="unknown network class 'NoNet'"):
        model_io.save_header("NoNet", {}, tmp_path / "bad.safetensors")
