"""Datasets in EDM's format (spec §12): an uncompressed zip of uncompressed PNGs plus dataset.json.

Image k is stored as `<first 5 digits of the 8-digit k>/img<8-digit k>.png` (1000 per folder);
dataset.json is {"labels": [[relative_png_path, int_label], ...]} or {"labels": null}.
Writers: CIFAR-10 (python tarball), an image folder (AFHQv2, FFHQ; Lanczos resize), ImageNet (centre crop,
label = index of the sorted synset folder) and the offline demo's procedural shapes.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import PIL.Image
import torch
from tqdm import tqdm

from d2o.io import atomic_path

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm"}


class DatasetError(RuntimeError):
    """A missing or malformed dataset source: the message names the path and the fix."""


def image_name(index: int) -> str:
    idx = f"{index:08d}"
    return f"{idx[:5]}/img{idx}.png"


def write_dataset_zip(dest: str | Path, images: Iterable[np.ndarray], labels: Iterable[int] | None = None,
                      total: int | None = None, extra: dict | None = None) -> int:
    """Write uint8 HWC images (and optional int labels) to an EDM dataset zip, atomically. Returns the count.
    `extra` is stored under the key "d2o" of dataset.json (EDM's loader reads only "labels"): e.g. what made a
    sample set."""
    label_list = None if labels is None else list(labels)
    entries, shape = [], None
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, img in enumerate(tqdm(images, total=total, desc=f"writing {Path(dest).name}", unit="img", mininterval=5)):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
                raise DatasetError(f"{dest}: image {i} must be uint8 HWC with 1 or 3 channels, got {img.dtype} {img.shape}")
            if shape is None:
                shape = img.shape
                if img.shape[0] != img.shape[1] or img.shape[0] & (img.shape[0] - 1):
                    raise DatasetError(f"{dest}: images must be square with a power-of-two size, got {img.shape}")
            elif img.shape != shape:
                raise DatasetError(f"{dest}: image {i} has shape {img.shape}, expected {shape} like image 0")
            buf = io.BytesIO()
            PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="png", compress_level=0, optimize=False)
            name = image_name(i)
            zf.writestr(name, buf.getvalue())
            entries.append(name)
        if label_list is not None and len(label_list) != len(entries):
            raise DatasetError(f"{dest}: {len(label_list)} labels for {len(entries)} images")
        meta = {"labels": None if label_list is None else [[n, int(l)] for n, l in zip(entries, label_list)]}
        if extra:
            meta["d2o"] = extra
        zf.writestr("dataset.json", json.dumps(meta))
    return len(entries)


def read_dataset_zip(path: str | Path, max_images: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a whole EDM dataset zip into RAM: uint8 NHWC images and int64 labels (or None)."""
    ds = ImageZipDataset(path)
    n = len(ds) if max_images is None else min(max_images, len(ds))
    labels = None if ds.labels is None else ds.labels[:n]
    return np.stack([ds.read_hwc(i) for i in range(n)]), labels


def cached_image_array(zip_path: str | Path, cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The dataset zip decoded once into uncompressed .npy files in `cache_dir` and memory-mapped: uint8 NHWC images
    (read-only np.memmap) and int64 labels (or None).

    The training processes of one node then share the images' pages (ImageNet 64: 14.7 GiB once, not per GPU), a
    resumed run skips the decode, and the decode streams into the file (no second copy in RAM). The cache is keyed by
    the zip's size and mtime; an exclusive lock lets one process build it while the others wait.
    """
    import fcntl

    zip_path, cache_dir = Path(zip_path), Path(cache_dir)
    st = zip_path.stat()
    key = f"{zip_path.stem}-{st.st_size}-{st.st_mtime_ns}"
    images_npy, labels_npy = cache_dir / f"{key}.images.npy", cache_dir / f"{key}.labels.npy"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not images_npy.exists():
            ds = ImageZipDataset(zip_path)
            first = ds.read_hwc(0)
            with atomic_path(labels_npy) as tmp:
                np.save(tmp, ds.labels if ds.labels is not None else np.zeros(0, np.int64))
            with atomic_path(images_npy) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ds), *first.shape))
                for i in tqdm(range(len(ds)), desc=f"decoding {zip_path.name}", unit="img", mininterval=10):
                    img = first if i == 0 else ds.read_hwc(i)
                    if img.shape != first.shape:
                        raise DatasetError(f"{zip_path}: image {i} has shape {img.shape}, expected {first.shape}")
                    out[i] = img
                out.flush()
                del out
    labels = np.load(labels_npy)
    return np.load(images_npy, mmap_mode="r"), (labels if len(labels) else None)


class ImageZipDataset(torch.utils.data.Dataset):
    """An EDM dataset zip read lazily: items are uint8 CHW RGB tensors (the torch-fidelity convention), in sorted
    member order as EDM's loader; `labels` holds the int labels or None. The zip handle is opened per process, so
    the dataset pickles for DataLoader workers; nothing but the member names is held in RAM."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"{self.path}: dataset zip not found; build it with `snakemake {self.path}`")
        with zipfile.ZipFile(self.path) as zf:
            self.names = sorted(n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
            meta = json.loads(zf.read("dataset.json")) if "dataset.json" in zf.namelist() else {}
        if not self.names:
            raise DatasetError(f"{self.path}: no images inside; expected EDM's layout '00000/img00000000.png' + dataset.json")
        self.extra = meta.get("d2o") or {}  # what write_dataset_zip recorded (e.g. the samples' identity)
        table = dict((n, l) for n, l in meta.get("labels") or [])
        self.labels = np.array([table[n] for n in self.names], dtype=np.int64) if table else None
        self._zip = None

    def __len__(self) -> int:
        return len(self.names)

    def read_hwc(self, i: int) -> np.ndarray:
        """Image i as a uint8 HWC RGB array."""
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return np.array(PIL.Image.open(io.BytesIO(self._zip.read(self.names[i]))).convert("RGB"))

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.read_hwc(i)).permute(2, 0, 1).contiguous()

    def __getstate__(self):
        return {**self.__dict__, "_zip": None}


# ---------------------------------------------------------------------------- sources


def iter_cifar10(tarball: str | Path) -> Iterator[tuple[np.ndarray, int]]:
    """The 50,000 CIFAR-10 training images (data_batch_1..5) and labels from the python tarball."""
    with tarfile.open(tarball, "r:gz") as tar:
        for batch in range(1, 6):
            member = tar.getmember(f"cifar-10-batches-py/data_batch_{batch}")
            data = pickle.load(tar.extractfile(member), encoding="latin1")  # noqa: S301 (a verified data tarball)
            images = data["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            yield from zip(images, data["labels"])


def _resize(img: PIL.Image.Image, resolution: int, transform: str) -> np.ndarray:
    img = img.convert("RGB")
    if transform == "center-crop":
        s = min(img.size)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        img = img.crop((left, top, left + s, top + s))
    elif img.width != img.height:
        raise DatasetError(f"non-square image {img.size}; use transform: center-crop")
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(img)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def convert_image_folder(src: str | Path, dest: str | Path, resolution: int, transform: str = "none",
                         labels_from_folders: bool = False) -> int:
    """Every image below `src` (recursive, sorted) -> EDM zip; labels = index of the sorted top-level folder."""
    src = Path(src)
    files = list_images(src)
    if not files:
        raise DatasetError(f"{src}: no images found")
    labels = None
    if labels_from_folders:
        classes = sorted({p.relative_to(src).parts[0] for p in files})
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[p.relative_to(src).parts[0]] for p in files]
    images = (_resize(PIL.Image.open(p), resolution, transform) for p in files)
    return write_dataset_zip(dest, images, labels, total=len(files))


def make_shapes(num_images: int, resolution: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Offline demo data: one coloured disc, square, triangle or ring on a smooth two-colour gradient.

    Labels are the shape class (4 classes). Deterministic in `seed`; anti-aliased by 4x supersampling.
    """
    rng = np.random.default_rng(seed)
    ss = 4
    n = resolution * ss
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    images = np.empty((num_images, resolution, resolution, 3), np.uint8)
    labels = rng.integers(0, 4, size=num_images)
    for i, cls in enumerate(labels):
        c0, c1, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
        img = c0 * (1 - t) + c1 * t
        cx, cy = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.15, 0.3)
        dx, dy = xx - cx, yy - cy
        if cls == 0:
            mask = dx**2 + dy**2 < r**2
        elif cls == 1:
            mask = (np.abs(dx) < r * 0.85) & (np.abs(dy) < r * 0.85)
        elif cls == 2:
            mask = (dy < r * 0.7) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
        else:
            d2 = dx**2 + dy**2
            mask = (d2 < r**2) & (d2 > (0.55 * r) ** 2)
        img = np.where(mask[..., None], fg, img)
        img = img.reshape(resolution, ss, resolution, ss, 3).mean(axis=(1, 3))
        images[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, labels


def prepare_dataset(spec: dict, dest: str | Path, source_file: str | Path | None = None) -> int:
    """Build one registry dataset (config `datasets.<name>`) into an EDM zip at `dest`."""
    src, res = spec["source"], spec["resolution"]
    fmt = src["format"]
    if fmt == "shapes":
        images, labels = make_shapes(src.get("num_images", 2048), res, src.get("seed", 0))
        return write_dataset_zip(dest, images, labels if spec["label_dim"] else None, total=len(images))
    if fmt == "cifar10":
        if res != 32:
            raise DatasetError(f"CIFAR-10 is 32x32; set datasets.<name>.resolution: 32 (got {res})")
        pairs = list(iter_cifar10(source_file))
        return write_dataset_zip(dest, (p[0] for p in pairs), [p[1] for p in pairs] if spec["label_dim"] else None,
                                 total=len(pairs))
    folder = Path(source_file if source_file is not None else src["path"])
    if not folder.is_dir() or not any(True for _ in folder.iterdir()):
        raise DatasetError(f"manual dataset source {folder} is missing or empty. {src.get('instructions', '')}".strip())
    return convert_image_folder(folder, dest, res, src.get("transform", "none"),
                                labels_from_folders=(fmt == "imagenet_folder" and spec["label_dim"] > 0))
