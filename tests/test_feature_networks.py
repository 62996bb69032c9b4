"""Feature networks and the projected discriminator in every pass D2O runs (G step, D step, R1), and the pretrained
class embedding of the conditional heads (d2o.class_embedding)."""

import pickle
import struct
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from d2o.class_embedding import (ClassEmbeddingError, UnsafePickleError, convert_class_embedding,
                                 load_class_embedding_file, read_class_embedding_pickle)
from d2o.feature_networks import DeiTBaseDistilledFeatures, _check_deit_structure, explicit_attention
from d2o.gan_loss import discriminator_loss, generator_loss
from d2o.projected_discriminator import ProjectedDiscriminator
from d2o.r1 import r1_penalty

DEIT = "deit_base_distilled_patch16_224"


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    return DeiTBaseDistilledFeatures(pretrained=False)


# ---------------------------------------------------------------------------------------------------------------
# DeiT: explicit attention (timm 0.5.4's), double backward.

def test_deit_double_backward_reaches_a_parameter_after_it(deit):
    """R1 through the DeiT feature network: grad of the taps w.r.t. the image, then backward of its squared norm into
    a trainable layer behind the network (timm >= 0.9's fused attention has no double backward)."""
    torch.manual_seed(1)
    after = nn.Conv2d(768, 1, 1)  # stands in for the trainable heads
    x = torch.randn(1, 3, 224, 224, requires_grad=True)
    assert [tuple(t.shape[1:]) for t in deit(x)] == [(768, 14, 14)] * 4        # token maps; the readout is a projection's
    taps = [r(t) for r, t in zip(deit.make_readout(), deit(x))]
    assert [tuple(t.shape[1:]) for t in taps] == [(96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7)]
    score = after(taps[3]).sum() + sum(t.mean() for t in taps[:3])
    (g,) = torch.autograd.grad(score, x, create_graph=True)
    penalty = g.square().sum()
    penalty.backward()
    assert torch.isfinite(penalty) and penalty > 0
    assert after.weight.grad is not None and torch.isfinite(after.weight.grad).all() and after.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in deit.parameters())  # frozen


def test_deit_blocks_compute_timms_blocks(deit):
    """Same state_dict as timm's model, and block outputs equal to timm's own Block.forward to rounding (fused or
    not); the order of operations is timm 0.5.4's (checked bitwise against 0.5.4 in the class docstring)."""
    import timm

    ref = timm.create_model(DEIT, pretrained=False)
    assert list(deit.vit.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        t = deit.tokens(x)
        ref_t = deit.vit._pos_embed(deit.vit.patch_embed(x))
        torch.testing.assert_close(t, ref_t, rtol=0, atol=0)
        for blk in deit.vit.blocks[:3]:
            t, ref_t = deit.block(blk, t), blk(ref_t)
    torch.testing.assert_close(t, ref_t, rtol=1e-5, atol=1e-5)


def test_explicit_attention_is_timm_054s_formula():
    torch.manual_seed(3)
    attn = nn.Module()
    attn.qkv, attn.proj = nn.Linear(16, 48), nn.Linear(16, 16)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    attn.double()
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    a = torch.softmax((q @ k.transpose(-2, -1)) * 0.5, dim=-1)
    expected = attn.proj((a @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(explicit_attention(attn, x, 4, 0.5), expected, rtol=0, atol=0)


def test_deit_refuses_a_timm_model_with_parts_it_does_not_compute():
    import timm

    model = timm.create_model(DEIT, pretrained=False, init_values=1e-5)  # LayerScale in every block
    with pytest.raises(ValueError, match="ls1 is not Identity"):
        _check_deit_structure(model, DEIT)


def test_deit_loads_timm_weights_unchanged(tmp_path, deit):
    path = tmp_path / "deit.pt"
    torch.save(deit.vit.state_dict(), path)
    again = DeiTBaseDistilledFeatures(pretrained=False, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(again.vit.state_dict().values(), deit.vit.state_dict().values()))


# ---------------------------------------------------------------------------------------------------------------
# The full discriminator: G step, D step, R1 step.

def _steps(D, res, label_dim, batch=2):
    """One G step (loss to the fake image), one D step (into the heads), one R1 step (double backward), as D2O."""
    g = torch.Generator().manual_seed(4)
    real = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    fake = (torch.rand(batch, 3, res, res, generator=g) * 2 - 1).requires_grad_(True)
    c = F.one_hot(torch.arange(batch) * 7 % max(label_dim, 1), label_dim).float() if label_dim else None
    heads = D.trainable_parameters()
    D.train()

    D.requires_grad_(False)
    loss_g = generator_loss(D(fake, c), "ns", "sample_sum")
    loss_g.backward()
    assert torch.isfinite(loss_g) and fake.grad is not None and fake.grad.abs().sum() > 0
    for p in heads:
        p.requires_grad_(True)

    lr, lf = D.forward_pair(real, c, fake.detach(), c)
    loss_d = discriminator_loss(lr, lf, "ns", "sample_sum")
    loss_d.backward()
    assert torch.isfinite(loss_d)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in heads)

    for p in heads:
        p.grad = None
    loss_r1, sq = r1_penalty(D, real, c, gamma=1e-4, interval=16)
    loss_r1.backward()
    assert torch.isfinite(loss_r1) and loss_r1 > 0 and sq.shape == (batch,)
    got = [p for p in heads if p.grad is not None and p.grad.abs().sum() > 0]
    assert got and all(torch.isfinite(p.grad).all() for p in got)
    assert all(p.grad is None for p in D.projections.parameters())
    if label_dim:
        embeds = [h.embed.weight for d in D.discriminators.values() for h in d.heads]
        assert all(e.grad is not None and e.grad[c.argmax(1)].abs().sum() > 0 for e in embeds)
        used = set(c.argmax(1).tolist())
        assert all(e.grad[[i for i in range(e.shape[0]) if i not in used]].abs().sum() == 0 for e in embeds)
    return loss_g, loss_d, loss_r1


@pytest.mark.parametrize("label_dim", [0, 1000])
def test_deit_discriminator_g_d_r1_steps(label_dim):
    torch.manual_seed(5)
    D = ProjectedDiscriminator([DEIT, "tf_efficientnet_lite0"], pretrained=False, label_dim=label_dim)
    _steps(D, 64, label_dim)


def test_vgg_discriminator_g_d_r1_steps():
    torch.manual_seed(6)
    D = ProjectedDiscriminator(["vgg16_bn", "tf_efficientnet_lite0"], pretrained=False, label_dim=10)
    _steps(D, 32, 10)


# ---------------------------------------------------------------------------------------------------------------
# Class embedding: a pickle in StyleGAN-XL/D2O's format, written by hand (no dill, no torch module pickling).

def _op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _op_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _op_int(i: int) -> bytes:
    return pickle.dumps(i, protocol=3)[2:-1]  # BININT1 / BININT2 / BININT, as pickle writes it


# OrderedDict(): the first one names the global and memoizes it (BINPUT 0), the others fetch it (BINGET 0), as in the
# real file (which memoizes everything; other memo entries are left out here)
_FIRST_ORDERED_DICT = _op_global("collections", "OrderedDict") + b"q\x00)R"
_ORDERED_DICT = b"h\x00)R"


def _storage_payload(weight: torch.Tensor) -> bytes:
    """The legacy torch.save of weight's storage, as torch's own pickling of a tensor embeds it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        func, (payload,) = weight.storage().__reduce__()
    assert func.__module__ == "torch.storage" and func.__name__ == "_load_from_bytes"
    return payload


def write_embedding_pickle(path, weight: torch.Tensor, attrs: dict | None = None, tamper: bytes | None = None):
    """`{'embed': nn.Embedding}` as StyleGAN-XL's dill.dump wrote it (protocol 3; the opcode sequence of D2O's file
    in_embeddings/tf_efficientnet_lite0.pkl apart from memo writes, checked against it once).
    `tamper` (an opcode fragment that leaves one object) replaces the `_buffers` value."""
    n, d = weight.shape
    attrs = dict(dict(num_embeddings=n, embedding_dim=d, padding_idx=None, max_norm=None, norm_type=2.0,
                      scale_grad_by_freq=False, sparse=False), **(attrs or {}))
    payload = _storage_payload(weight.contiguous())
    tensor = (_op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + _op_global("torch.storage", "_load_from_bytes")
              + b"B" + struct.pack("<I", len(payload)) + payload + b"\x85R"
              + _op_int(0) + _op_int(n) + _op_int(d) + b"\x86" + _op_int(d) + _op_int(1) + b"\x86" + b"\x89"
              + _ORDERED_DICT + b"tR")
    param = _op_global("torch._utils", "_rebuild_parameter") + tensor + b"\x88" + _ORDERED_DICT + b"\x87R"
    nonpersistent = _op_global("dill._dill", "_load_type") + _op_str("set") + b"\x85R" + b"]\x85R"
    state = (b"}(" + _op_str("training") + b"\x88"
             + _op_str("_parameters") + _FIRST_ORDERED_DICT + _op_str("weight") + param + b"s"
             + _op_str("_buffers") + (tamper if tamper is not None else _ORDERED_DICT)
             + _op_str("_non_persistent_buffers_set") + nonpersistent)
    for hooks in ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                  "_load_state_dict_pre_hooks", "_modules"):
        state += _op_str(hooks) + _ORDERED_DICT
    for k, v in attrs.items():
        state += _op_str(k) + pickle.dumps(v, protocol=3)[2:-1]  # a plain value's opcodes without PROTO / STOP
    state += b"u"
    body = b"\x80\x03}" + _op_str("embed") + _op_global("torch.nn.modules.sparse", "Embedding") + b")\x81" + state
    with open(path, "wb") as f:
        f.write(body + b"bs.")
    return path


@pytest.fixture
def small_embedding():
    return torch.randn(1000, 320, generator=torch.Generator().manual_seed(8))


def test_class_embedding_pickle_converts_and_loads_into_every_head(tmp_path, small_embedding):
    src = write_embedding_pickle(tmp_path / "tf_efficientnet_lite0.pkl", small_embedding)
    w = read_class_embedding_pickle(src)
    assert w.dtype == torch.float32 and torch.equal(w, small_embedding)
    dst = tmp_path / "embed.safetensors"
    meta = convert_class_embedding(src, dst, extra={"origin": "test"})
    import hashlib

    from safetensors import safe_open
    with safe_open(str(dst), framework="pt") as f:
        assert list(f.keys()) == ["weight"] and f.metadata() == meta
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() and meta["origin"] == "test"
    for path in (dst, src):
        torch.manual_seed(9)
        D = ProjectedDiscriminator(["tiny"], img_resolution=16, pretrained=False, label_dim=4, cout=8)
        D.load_class_embedding(path)
        heads = [h for d in D.discriminators.values() for h in d.heads]
        assert len(heads) == 4 and all(torch.equal(h.embed.weight, small_embedding) for h in heads)
        assert len({h.embed.weight.data_ptr() for h in heads}) == 4  # one copy per head
    D = ProjectedDiscriminator(["tiny"], img_resolution=16, pretrained=False, label_dim=4, cout=8, embed_weights=dst)
    assert torch.equal(D.discriminators["tiny"].heads[0].embed.weight, small_embedding)
    torch.save(small_embedding, tmp_path / "embed.pt")  # a plain tensor file still works
    assert torch.equal(load_class_embedding_file(tmp_path / "embed.pt"), small_embedding)


def test_class_embedding_hand_written_pickle_is_what_pickle_itself_reads(tmp_path, small_embedding):
    """With dill installed, the plain unpickler (which runs the file) builds the same nn.Embedding."""
    pytest.importorskip("dill")
    src = write_embedding_pickle(tmp_path / "e.pkl", small_embedding)
    with open(src, "rb") as f:
        emb = pickle.Unpickler(f).load()["embed"]
    assert isinstance(emb, nn.Embedding) and torch.equal(emb.weight, small_embedding)


def test_class_embedding_refuses_code_and_wrong_contents(tmp_path, small_embedding):
    marker = tmp_path / "pwned"
    for module, name in (("os", "system"), ("posix", "system")):
        evil = write_embedding_pickle(tmp_path / "evil.pkl", small_embedding,
                                      tamper=_op_global(module, name) + _op_str(f"touch {marker}") + b"\x85R")
        with pytest.raises(UnsafePickleError, match=f"evil.pkl.*'{module}.{name}'"):
            read_class_embedding_pickle(evil)
        with pytest.raises(UnsafePickleError):
            convert_class_embedding(evil, tmp_path / "evil.safetensors")
        assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()
    other = write_embedding_pickle(tmp_path / "linear.pkl", small_embedding,
                                   tamper=_op_global("torch.nn.modules.linear", "Linear") + b")\x81")
    with pytest.raises(UnsafePickleError, match="torch.nn.modules.linear.Linear"):
        read_class_embedding_pickle(other)
    wrong = write_embedding_pickle(tmp_path / "ten.pkl", small_embedding[:10])
    with pytest.raises(ClassEmbeddingError, match=r"num_embeddings"):
        read_class_embedding_pickle(wrong)
    padded = write_embedding_pickle(tmp_path / "pad.pkl", small_embedding, attrs=dict(padding_idx=0))
    with pytest.raises(ClassEmbeddingError, match="padding_idx"):
        read_class_embedding_pickle(padded)
    half = write_embedding_pickle(tmp_path / "half.pkl", small_embedding.half())
    with pytest.raises(ClassEmbeddingError, match="float16"):
        read_class_embedding_pickle(half)
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "half.pkl").read_bytes()[:5000])
    with pytest.raises(ClassEmbeddingError, match="not a readable"):
        read_class_embedding_pickle(tmp_path / "cut.pkl")
    D = ProjectedDiscriminator(["tiny"], img_resolution=16, pretrained=False, label_dim=4, cout=8)
    torch.save(small_embedding[:10], tmp_path / "ten.pt")
    with pytest.raises(ValueError, match="shape"):
        D.load_class_embedding(tmp_path / "ten.pt")
