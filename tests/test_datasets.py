import json
import os
import zipfile

import PIL.Image
import numpy as np
import pytest

from d2o.datasets import DatasetError, ImageZipDataset, cached_image_array, make_shapes, prepare_dataset, read_dataset_zip, write_dataset_zip


def test_edm_zip_layout_roundtrip(tmp_path):
    imgs, labels = make_shapes(1003, 16, seed=1)
    dest = tmp_path / "d.zip"
    assert write_dataset_zip(dest, imgs, labels) == 1003
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
        assert "00000/img00000000.png" in names and "00001/img00001002.png" in names
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        meta = json.loads(zf.read("dataset.json"))
    assert meta["labels"][5] == ["00000/img00000005.png", int(labels[5])]
    back, lab = read_dataset_zip(dest)
    assert np.array_equal(back, imgs) and np.array_equal(lab, labels)
    ds = ImageZipDataset(dest)
    assert ds[0].shape == (3, 16, 16) and ds[0].dtype.is_floating_point is False


def test_cached_image_array_decodes_once_and_memory_maps(tmp_path, monkeypatch):
    imgs, labels = make_shapes(37, 16, seed=2)
    write_dataset_zip(tmp_path / "d.zip", imgs, labels)
    write_dataset_zip(tmp_path / "u.zip", imgs[:5])
    got, lab = cached_image_array(tmp_path / "d.zip", tmp_path / "cache")
    assert isinstance(got, np.memmap) and not got.flags.writeable
    assert np.array_equal(got, imgs) and np.array_equal(lab, labels)
    assert cached_image_array(tmp_path / "u.zip", tmp_path / "cache")[1] is None
    monkeypatch.setattr(ImageZipDataset, "read_hwc", lambda self, i: pytest.fail("decoded again"))
    again, _ = cached_image_array(tmp_path / "d.zip", tmp_path / "cache")     # a resumed run: no decode
    assert np.array_equal(again, imgs)
    os.utime(tmp_path / "d.zip", ns=(1, 1))                                  # a rebuilt dataset: a new cache
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        cached_image_array(tmp_path / "d.zip", tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]   # no half-written file left


def test_shapes_deterministic_and_varied():
    a, la = make_shapes(64, 16, seed=3)
    b, lb = make_shapes(64, 16, seed=3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert set(la.tolist()) == {0, 1, 2, 3} and a.std() > 30


def test_shapes_options_plain_background_contrast_and_centre():
    imgs, labels, attrs = make_shapes(64, 16, seed=4, attributes=True, center=(0.45, 0.55), gradient=0.0, contrast=0.6)
    assert np.array_equal(attrs["bg0"], attrs["bg1"])                          # a plain background
    assert np.all(np.linalg.norm(attrs["fg"] - attrs["bg0"], axis=1) >= 0.6)   # the shape stands out
    assert attrs["center"].min() >= 0.45 and attrs["center"].max() <= 0.55
    assert np.array_equal(imgs[:, 0, 0], np.clip(attrs["bg0"] * 255 + 0.5, 0, 255).astype(np.uint8))   # corner = bg
    default = make_shapes(64, 16, seed=4, attributes=True)[2]
    assert not np.array_equal(default["bg0"], default["bg1"])
    assert np.linalg.norm(default["fg"] - (default["bg0"] + default["bg1"]) / 2, axis=1).min() < 0.6   # the option acts
    half = make_shapes(64, 16, seed=4, attributes=True, gradient=0.5)[2]      # halfway to the independent second end
    assert np.allclose(half["bg1"], (default["bg0"] + default["bg1"]) / 2, atol=1e-6)


def test_shapes_dataset_reads_its_registry_options(tmp_path):
    spec = {"resolution": 16, "label_dim": 4, "source": {"kind": "procedural", "format": "shapes", "num_images": 32,
                                                         "seed": 5, "radius": [0.3, 0.4], "gradient": 0.0}}
    prepare_dataset(spec, tmp_path / "s.zip")
    got, _ = read_dataset_zip(tmp_path / "s.zip")
    assert np.array_equal(got, make_shapes(32, 16, 5, radius=(0.3, 0.4), gradient=0.0)[0])


def test_unlabelled_and_bad_shapes(tmp_path):
    write_dataset_zip(tmp_path / "u.zip", make_shapes(4, 16)[0])
    assert read_dataset_zip(tmp_path / "u.zip")[1] is None
    with pytest.raises(DatasetError, match="power-of-two"):
        write_dataset_zip(tmp_path / "bad.zip", np.zeros((2, 12, 12, 3), np.uint8))
    assert not (tmp_path / "bad.zip").exists()          # atomic: nothing half-written


def test_missing_manual_source_names_instructions(tmp_path):
    spec = {"resolution": 64, "label_dim": 0, "source": {"kind": "manual", "format": "image_folder",
            "path": str(tmp_path / "nope"), "instructions": "Download AFHQv2 from X."}}
    with pytest.raises(DatasetError, match=r"nope is missing or empty\. Download AFHQv2 from X\."):
        prepare_dataset(spec, tmp_path / "out.zip")


def test_image_folder_center_crop_and_labels(tmp_path):
    from PIL import Image
    for cls in ("b_synset", "a_synset"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        Image.fromarray(np.full((40, 60, 3), 200 if cls[0] == "a" else 50, np.uint8)).save(tmp_path / "src" / cls / "x.jpg")
    spec = {"resolution": 16, "label_dim": 2, "source": {"kind": "manual", "format": "imagenet_folder",
            "path": str(tmp_path / "src"), "transform": "center-crop"}}
    assert prepare_dataset(spec, tmp_path / "in.zip") == 2
    imgs, labels = read_dataset_zip(tmp_path / "in.zip")
    assert imgs.shape == (2, 16, 16, 3) and labels.tolist() == [0, 1]
    assert abs(int(imgs[0].mean()) - 200) <= 2


def test_cifar10_tarball(tmp_path):
    import io
    import pickle
    import tarfile
    rng = np.random.default_rng(0)
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for b in range(1, 6):
            payload = pickle.dumps({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [b, 0, 9]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{b}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    spec = {"resolution": 32, "label_dim": 10, "source": {"kind": "download", "format": "cifar10"}}
    assert prepare_dataset(spec, tmp_path / "c.zip", tar_path) == 15
    imgs, labels = read_dataset_zip(tmp_path / "c.zip")
    assert imgs.shape == (15, 32, 32, 3) and labels.tolist()[:3] == [1, 0, 9]



def _cifar_tar(path, payload_for=None):
    """A CIFAR-10-format tarball; `payload_for(b)` replaces batch b's pickle bytes."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for b in range(1, 6):
            payload = pickle.dumps({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [b, 0, 9]})
            if payload_for is not None:
                payload = payload_for(b) or payload
            info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{b}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling this creates the marker file


def test_a_tampered_cifar_archive_never_runs_its_payload(tmp_path):
    """Pre-staged archives are verified where they are consumed, and the batches are read with an allow-list."""
    import hashlib
    import pickle

    marker = tmp_path / "pwned"
    tar = _cifar_tar(tmp_path / "cifar-10-python.tar.gz", lambda b: pickle.dumps(_Payload(marker)) if b == 3 else None)
    good = "0" * 64
    spec = {"resolution": 32, "label_dim": 10, "source": {"kind": "download", "format": "cifar10", "sha256": good}}
    with pytest.raises(DatasetError, match=rf"cifar-10-python.tar.gz: SHA-256 is not datasets.cifar10.source.sha256 \({good}\)"):
        prepare_dataset(spec, tmp_path / "c.zip", tar, name="cifar10")
    spec["source"]["sha256"] = hashlib.sha256(tar.read_bytes()).hexdigest()  # even with a matching hash: no code runs
    with pytest.raises(DatasetError, match=r"data_batch_3: refuses to unpickle (builtins|io).open"):
        prepare_dataset(spec, tmp_path / "c.zip", tar, name="cifar10")
    assert not marker.exists() and not (tmp_path / "c.zip").exists()


def test_a_partial_manual_dataset_is_an_error_and_completing_it_changes_its_state(tmp_path):
    from d2o.datasets import source_state

    src = tmp_path / "imagenet"
    for syn, n in (("n01", 2), ("n02", 1)):
        (src / syn).mkdir(parents=True)
        for i in range(n):
            PIL.Image.fromarray(np.full((20, 24, 3), 9 * i, np.uint8)).save(src / syn / f"{i}.JPEG")
    spec = {"resolution": 16, "label_dim": 3, "expected": {"images": 4, "classes": 3},
            "source": {"kind": "manual", "format": "imagenet_folder", "transform": "center-crop", "path": str(src)}}
    state = source_state(src)
    with pytest.raises(DatasetError, match=r"imagenet: found 3 images in 2 classes, datasets.imagenet64.expected says "
                                           r"4 images in 3 classes: the source is incomplete"):
        prepare_dataset(spec, tmp_path / "i.zip", name="imagenet64")
    assert not (tmp_path / "i.zip").exists()
    (src / "n03").mkdir()
    PIL.Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(src / "n03" / "0.JPEG")
    assert source_state(src) != state and source_state(tmp_path / "nope") == "missing"
    assert prepare_dataset(spec, tmp_path / "i.zip", name="imagenet64") == 4


def test_a_damaged_zip_names_itself(tmp_path):
    (tmp_path / "d.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match=r"d.zip: not a readable dataset zip .* delete it and rebuild it"):
        ImageZipDataset(tmp_path / "d.zip")
