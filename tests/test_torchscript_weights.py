"""d2o.torchscript_weights: a TorchScript archive's state dict read without torch.jit.load, checked against it."""

import os
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_fidelity import feature_extractor_clip as tf_clip

from d2o.torchscript_weights import TorchScriptReadError, read_torchscript_state_dict

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning"
)


class TinyCLIP(nn.Module):
    """OpenAI CLIP's layout (the keys torch-fidelity's build_model reads) at toy size, from torch-fidelity's layers."""

    def __init__(self, embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                 context_length=8, vocab_size=50, width=64, heads=2, layers=2):  # fmt: skip
        super().__init__()
        heads_visual = vision_width // 64  # what build_model assumes
        self.visual = tf_clip.VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                                heads_visual, embed_dim)  # fmt: skip
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)  # plain tensor attribute
        self.transformer = tf_clip.Transformer(width, layers, heads, attn_mask=mask)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context_length, width))
        self.ln_final = tf_clip.LayerNorm(width)
        self.text_projection = nn.Parameter(width**-0.5 * torch.randn(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        for name, value in [("input_resolution", image_resolution), ("context_length", context_length),
                            ("vocab_size", vocab_size)]:  # fmt: skip
            self.register_buffer(name, torch.tensor(value))  # int64 scalars, as in OpenAI's archives

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.type(self.visual.conv1.weight.dtype))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode_image(image)


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes | None]) -> None:
    """Copy of the zip `src` with records replaced (bytes) or dropped (None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def _assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for k, v in expected.items():
        assert actual[k].dtype == v.dtype and actual[k].shape == v.shape, k
        assert torch.equal(actual[k], v), k


@pytest.fixture(scope="module")
def clip_archives(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyCLIP().eval()
    tf_clip.convert_weights(model)  # conv/linear/attention weights to fp16, as OpenAI's release
    for p in (model.visual.proj, model.text_projection):  # OpenAI's convert_weights also halves these
        p.data = p.data.half()
    root = tmp_path_factory.mktemp("clip")
    archives = {}
    torch.jit.save(torch.jit.script(model), root / "scripted.pt")
    archives["scripted"] = root / "scripted.pt"
    traced = torch.jit.trace_module(model, {"encode_image": torch.randn(2, 3, 32, 32)})  # released archives are traced
    torch.jit.save(traced, root / "traced.pt")
    archives["traced"] = root / "traced.pt"
    return model, archives


@pytest.mark.parametrize("kind", ["scripted", "traced"])
def test_clip_archive_matches_jit_load(clip_archives, kind, monkeypatch):
    model, archives = clip_archives
    expected = torch.jit.load(archives[kind], map_location="cpu").state_dict()
    with monkeypatch.context() as m:  # nothing that could run code from the file is used
        for owner, name in [(torch.jit, "load"), (torch, "load"), (pickle, "load"), (pickle, "loads")]:
            m.setattr(owner, name, _forbidden)
        state = read_torchscript_state_dict(archives[kind])
    _assert_same_state(state, expected)
    _assert_same_state(state, model.state_dict())
    assert len(state) == 65 and "transformer.resblocks.0.attn.in_proj_weight" in state
    assert {v.dtype for v in state.values()} == {torch.float16, torch.float32, torch.int64}
    assert state["visual.conv1.weight"].dtype == torch.float16
    assert state["visual.class_embedding"].dtype == torch.float32
    assert not any("attn_mask" in k for k in state)  # plain attribute (scripted) / constant (traced)


def _forbidden(*args, **kwargs):
    raise AssertionError("read_torchscript_state_dict must not load the archive with torch or the default unpickler")


def test_clip_build_model_features_match(clip_archives):
    model, archives = clip_archives
    state = read_torchscript_state_dict(archives["traced"])
    x = torch.randn(3, 3, 32, 32)
    ours = tf_clip.build_model(dict(state), torch.float32).visual(x)
    reference = tf_clip.build_model(dict(model.state_dict()), torch.float32).visual(x)
    assert ours.shape == (3, 32) and torch.equal(ours, reference)


class _Counter:
    def __init__(self, t: torch.Tensor):
        self.t = t


class Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("buf", torch.arange(4.0))
        self.register_buffer("scratch", torch.ones(2), persistent=False)
        self.plain = torch.zeros(3)
        self.weight = nn.Parameter(torch.randn(2, 3))
        self.register_buffer("row", self.weight.detach()[1])  # a view: shares the parameter's storage, offset 3
        self.layers = nn.ModuleList([nn.Linear(3, 3, bias=False), nn.BatchNorm1d(3)])
        self.counter = torch.jit.script(_Counter)(torch.full((5,), 7.0))  # TorchScript class: not a module
        self.steps = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x @ self.weight.t() + self.buf.sum() + self.scratch.sum() + self.plain.sum() + self.counter.t.sum()


def test_buffers_and_plain_attributes(tmp_path):
    path = tmp_path / "stateful.pt"
    torch.jit.save(torch.jit.script(Stateful()), path)
    state = read_torchscript_state_dict(path)
    _assert_same_state(state, torch.jit.load(path, map_location="cpu").state_dict())
    # Parameters then buffers per module; the non-persistent flag is not saved, so `scratch` is a buffer like `buf`;
    # the plain tensor, the TorchScript class's tensor and Linear's None bias are not state.
    assert list(state)[:4] == ["weight", "buf", "scratch", "row"]
    assert state["row"].storage_offset() == 3 and state["row"].data_ptr() == state["weight"][1].data_ptr()
    assert "plain" not in state and not any(k.startswith("counter") for k in state)
    assert "layers.0.bias" not in state and "layers.1.num_batches_tracked" in state

    subset = read_torchscript_state_dict(path, expected_keys=["layers.0.weight", "buf"])
    assert list(subset) == ["buf", "layers.0.weight"]
    with pytest.raises(TorchScriptReadError, match=rf"{path}.*missing.*plain"):
        read_torchscript_state_dict(path, expected_keys=["buf", "plain"])

    # Without class sources the declarations are unknown: refused, unless expected_keys names the tensors.
    no_code = tmp_path / "no_code.pt"
    with zipfile.ZipFile(path) as z:
        _rewrite_zip(path, no_code, {n: None for n in z.namelist() if "/code/" in n})
    with pytest.raises(TorchScriptReadError, match=rf"{no_code}.*no .*code/"):
        read_torchscript_state_dict(no_code)
    _assert_same_state(read_torchscript_state_dict(no_code, expected_keys=state), state)


@pytest.mark.parametrize("payload", ["os.system", "subprocess.Popen", "builtins.eval", "stack_global"])
def test_tampered_archive_is_refused(tmp_path, payload):
    path, tampered, pwned = tmp_path / "ok.pt", tmp_path / "tampered.pt", tmp_path / "pwned"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)
    command = f"touch {pwned}"
    if payload == "stack_global":  # protocol 4: STACK_GLOBAL instead of GLOBAL
        payload, data = f"{os.system.__module__}.system", pickle.dumps(_Exploit(command), protocol=4)  # posix.system
        assert b"\x93" in data  # STACK_GLOBAL
    elif payload == "subprocess.Popen":  # Popen(["touch", path])
        data = b"\x80\x02csubprocess\nPopen\n]q\x00(X\x05\x00\x00\x00touch" + _binunicode(str(pwned)) + b"e\x85R."
    elif payload == "builtins.eval":
        data = b"\x80\x02cbuiltins\neval\n" + _binunicode(f"__import__('os').system({command!r})") + b"\x85R."
    else:
        data = b"\x80\x02cos\nsystem\n" + _binunicode(command) + b"\x85R."
    _rewrite_zip(path, tampered, {"ok/data.pkl": data})
    with pytest.raises(TorchScriptReadError, match=rf"{re.escape(str(tampered))}.*{re.escape(payload)}"):
        read_torchscript_state_dict(tampered)
    assert not pwned.exists()


class _Exploit:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _binunicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def test_not_an_archive(tmp_path):
    text = tmp_path / "model.pt"
    text.write_text("<html>not found</html>")
    with pytest.raises(TorchScriptReadError, match=rf"{text}.*not a readable zip"):
        read_torchscript_state_dict(text)

    no_pickle = tmp_path / "empty.zip"
    with zipfile.ZipFile(no_pickle, "w") as z:
        z.writestr("empty/version", "3\n")
    with pytest.raises(TorchScriptReadError, match=rf"{no_pickle}.*no <archive>/data.pkl"):
        read_torchscript_state_dict(no_pickle)

    checkpoint = tmp_path / "state.pt"  # torch.save: a zip with data.pkl, but a dict and no code/
    torch.save(nn.Linear(2, 2).state_dict(), checkpoint)
    with pytest.raises(TorchScriptReadError, match=rf"{checkpoint}.*torch.save checkpoint"):
        read_torchscript_state_dict(checkpoint)
    with pytest.raises(TorchScriptReadError, match=rf"{checkpoint}.*not a __torch__ module"):
        read_torchscript_state_dict(checkpoint, expected_keys=["weight"])


def test_missing_or_short_storage_record(tmp_path):
    path = tmp_path / "lin.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 3)), path)
    missing, short = tmp_path / "missing.pt", tmp_path / "short.pt"
    _rewrite_zip(path, missing, {"lin/data/1": None})
    with pytest.raises(TorchScriptReadError, match=rf"{missing}.*storage '1'.*lin/data/1 is missing"):
        read_torchscript_state_dict(missing)
    _rewrite_zip(path, short, {"lin/data/0": b"\0" * 8})
    with pytest.raises(TorchScriptReadError, match=rf"{short}.*lin/data/0 has 8 bytes, expected 6 x 4"):
        read_torchscript_state_dict(short)


def test_big_endian_archive_is_byte_swapped(tmp_path):
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # float32 storages only
    path, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.jit.save(torch.jit.script(module), path)
    with zipfile.ZipFile(path) as z:
        swapped = {n: torch.frombuffer(bytearray(z.read(n)), dtype=torch.uint8).view(-1, 4).flip(1).numpy().tobytes()
                   for n in z.namelist() if "/data/" in n}  # fmt: skip
    _rewrite_zip(path, big, {"little/byteorder": b"big", **swapped})
    _assert_same_state(read_torchscript_state_dict(big), module.state_dict())
