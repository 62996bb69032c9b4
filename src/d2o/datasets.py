"""Datasets in EDM's format (spec §12): an uncompressed zip of uncompressed PNGs plus dataset.json.

Image k is stored as `<first 5 digits of the 8-digit k>/img<8-digit k>.png` (1000 per folder);
dataset.json is {"labels": [[relative_png_path, int_label], ...]} or {"labels": null}.
Writers: CIFAR-10 (python tarball), an image folder (AFHQv2, FFHQ; Lanczos resize), ImageNet (centre crop,
label = index of the sorted synset folder) and the offline demo's procedural shapes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
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
        try:
            with zipfile.ZipFile(self.path) as zf:
                self.names = sorted(n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
                meta = json.loads(zf.read("dataset.json")) if "dataset.json" in zf.namelist() else {}
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: not a readable dataset zip ({type(e).__name__}: {e}); it is truncated or "
                               f"corrupt: delete it and rebuild it (snakemake {self.path})") from None
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


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches hold a dict of bytes, lists and one numpy uint8 array: only numpy's array
    reconstruction is allowed, so no code from the file ever runs (a tampered batch is refused)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"{self.source}: refuses to unpickle {module}.{name} (a CIFAR-10 batch holds only numpy "
                               f"arrays, lists and bytes); the archive is not CIFAR-10's: delete it and download again")
        if name != "_reconstruct":
            return getattr(np, name)
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        return _reconstruct


def iter_cifar10(tarball: str | Path) -> Iterator[tuple[np.ndarray, int]]:
    """The 50,000 CIFAR-10 training images (data_batch_1..5) and labels from the python tarball, read without
    executing anything from it (`_CifarUnpickler`)."""
    with tarfile.open(tarball, "r:gz") as tar:
        for batch in range(1, 6):
            name = f"cifar-10-batches-py/data_batch_{batch}"
            data = _CifarUnpickler(tar.extractfile(tar.getmember(name)), f"{tarball}:{name}").load()
            if not isinstance(data, dict) or "data" not in data or "labels" not in data:
                raise DatasetError(f"{tarball}:{name}: not a CIFAR-10 batch (keys {sorted(data) if isinstance(data, dict) else type(data).__name__})")
            images = np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
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


def make_shapes(num_images: int, resolution: int = 16, seed: int = 0, attributes: bool = False,
                radius: tuple[float, float] = (0.15, 0.3), center: tuple[float, float] = (0.3, 0.7),
                gradient: float = 1.0, contrast: float = 0.0):
    """Offline demo data: one coloured disc, square, triangle or ring on a smooth two-colour gradient.

    Returns (images uint8 NHWC, labels): labels are the shape class (4 classes). Deterministic in `seed`;
    anti-aliased by 4x supersampling. Each scene draws its colours uniformly in [0, 1]^3: the gradient's ends bg0 and
    bg1, and the shape's fg; `gradient` scales how far bg1 may lie from bg0 (1: independent, 0: a plain background),
    fg is drawn again while it lies closer than `contrast` (RGB distance) to the background's mean colour. The shape's
    radius is uniform in `radius` and its centre's x and y in `center` (shares of the image side).
    `attributes=True` also returns what each scene was drawn from: `fg`, `bg0`, `bg1` (RGB in [0, 1]), `radius`,
    `center` (x, y) (the trained demo extractor's regression targets).
    """
    rng = np.random.default_rng(seed)
    ss = 4
    n = resolution * ss
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    images = np.empty((num_images, resolution, resolution, 3), np.uint8)
    labels = rng.integers(0, 4, size=num_images)
    attrs = {k: np.empty((num_images, d), np.float32) for k, d in (("fg", 3), ("bg0", 3), ("bg1", 3), ("center", 2))}
    attrs["radius"] = np.empty(num_images, np.float32)
    for i, cls in enumerate(labels):
        c0, c1, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if gradient != 1.0:
            c1 = c0 + gradient * (c1 - c0)
        while np.linalg.norm(fg - (c0 + c1) / 2) < contrast:
            fg = rng.uniform(0, 1, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
        img = c0 * (1 - t) + c1 * t
        cx, cy = rng.uniform(*center, 2)
        r = rng.uniform(*radius)
        attrs["fg"][i], attrs["bg0"][i], attrs["bg1"][i], attrs["center"][i], attrs["radius"][i] = fg, c0, c1, (cx, cy), r
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
    return (images, labels, attrs) if attributes else (images, labels)


SHAPES_OPTIONS = ("radius", "center", "gradient", "contrast")


def shapes_options(source: dict) -> dict:
    """make_shapes keyword arguments of a registry `datasets.<name>.source` of format shapes (the keys it sets)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in source.items() if k in SHAPES_OPTIONS}


def _check_count(name: str, where, images: int, classes: int | None, expected: dict) -> None:
    """A source with fewer (or more) images or classes than the registry expects is an error, never a dataset."""
    want_i, want_c = expected.get("images"), expected.get("classes")
    if (want_i is not None and images != want_i) or (want_c is not None and classes is not None and classes != want_c):
        found = f"{images:,} images" + (f" in {classes:,} classes" if classes is not None else "")
        want = f"{want_i:,} images" + (f" in {want_c:,} classes" if want_c is not None else "")
        raise DatasetError(f"{where}: found {found}, datasets.{name}.expected says {want}: the source is incomplete "
                           f"(or has extra files); complete it and rerun (the zip is rebuilt when the source changes)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def source_state(folder: str | Path, max_fanout: int = 16) -> str:
    """A cheap fingerprint of a manual source folder (part of the dataset's DAG identity: a completed download
    rebuilds the zip): names, sizes and mtimes of its entries, descending into subfolders only where a folder has at
    most `max_fanout` of them (AFHQv2's splits and classes; not ImageNet's 1000 synsets, whose own mtimes change when
    files are added). "missing" for a folder that does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    h = hashlib.sha256()
    stack = [folder]
    while stack:
        d = stack.pop()
        entries = sorted(os.scandir(d), key=lambda e: e.name)
        subdirs = [e for e in entries if e.is_dir()]
        for e in entries:
            st = e.stat()
            h.update(f"{Path(e.path).relative_to(folder)}\0{e.is_dir()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if len(subdirs) <= max_fanout:
            stack += [Path(e.path) for e in subdirs]
    return h.hexdigest()[:16]


def prepare_dataset(spec: dict, dest: str | Path, source_file: str | Path | None = None, name: str = "dataset") -> int:
    """Build one registry dataset (config `datasets.<name>`) into an EDM zip at `dest`.

    A downloaded source is verified against `source.sha256` here too (a pre-staged copy is checked like a download);
    the image and class counts must equal `expected` (a partial manual download is an error, not a dataset)."""
    src, res = spec["source"], spec["resolution"]
    fmt, expected = src["format"], spec.get("expected", {})
    if fmt == "shapes":
        images, labels = make_shapes(src.get("num_images", 2048), res, src.get("seed", 0), **shapes_options(src))
        _check_count(name, "procedural source", len(images), len(set(labels.tolist())), expected)
        return write_dataset_zip(dest, images, labels if spec["label_dim"] else None, total=len(images))
    if fmt == "cifar10":
        if res != 32:
            raise DatasetError(f"CIFAR-10 is 32x32; set datasets.<name>.resolution: 32 (got {res})")
        if src.get("sha256") and _sha256(Path(source_file)) != src["sha256"].lower():
            raise DatasetError(f"{source_file}: SHA-256 is not datasets.{name}.source.sha256 ({src['sha256']}); the "
                               f"archive is damaged or not CIFAR-10's: delete it and download again")
        pairs = list(iter_cifar10(source_file))
        _check_count(name, source_file, len(pairs), len({p[1] for p in pairs}), expected)
        return write_dataset_zip(dest, (p[0] for p in pairs), [p[1] for p in pairs] if spec["label_dim"] else None,
                                 total=len(pairs))
    folder = Path(source_file if source_file is not None else src["path"])
    if not folder.is_dir() or not any(True for _ in folder.iterdir()):
        raise DatasetError(f"manual dataset source {folder} is missing or empty. {src.get('instructions', '')}".strip())
    files = list_images(folder)
    by_class = fmt == "imagenet_folder" and spec["label_dim"] > 0
    classes = len({p.relative_to(folder).parts[0] for p in files}) if by_class else None
    _check_count(name, folder, len(files), classes, expected)
    return convert_image_folder(folder, dest, res, src.get("transform", "none"), labels_from_folders=by_class)
