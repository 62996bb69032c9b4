"""The paper's figures (1-6), the sample grids of Figs 7-21 and the thesis-demo figure, with matplotlib (Agg).

Every function returns a `matplotlib.figure.Figure` with labelled axes (units), a legend where there are several
series, a title, and the run `label` ("paper protocol" / "demo features, not comparable with the paper") as a
footnote. `save(fig, stem)` writes stem.pdf and stem.png atomically. Spec: d2o-reproduction-facts.md §10, §9.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from d2o.io import atomic_path  # noqa: E402

DPI = 180
GRAY, BLUE = "0.45", "tab:blue"          # Fig 2 colours: vs dataset (gray), vs student (blue)
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
                     "xtick.labelsize": 10, "ytick.labelsize": 10})


def _footnote(fig, label: str):
    """The result label, below everything else (saved with bbox_inches='tight', so it never overlaps the axes)."""
    fig.text(0.995, -0.02, label, ha="right", va="top", fontsize=10, color="0.35", style="italic")


def save(fig, stem: str | Path, dpi: int = DPI) -> tuple[Path, Path]:
    """Write `stem`.pdf and `stem`.png (dpi 150-200) atomically; return both paths."""
    stem = Path(stem)
    paths = (stem.with_suffix(".pdf"), stem.with_suffix(".png"))
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return paths


def _curves(ax, curves: dict, title: str, logx: bool = True):
    for name, pts in curves.items():
        pts = sorted(pts)
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", ms=4, lw=1.8, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("training images (Mimg)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend()


def fig1(curves: dict, literature_points: list, label: str):
    """Fig 1A: FID vs training images (log x) on ImageNet 64x64; our curves plus literature points.

    curves: name -> [(mimg, fid)]; literature_points: dicts with method, fid, mimg, mimg_approx (hollow marker).
    """
    fig, ax = plt.subplots(figsize=(8, 5.5))
    _curves(ax, curves, "Fig 1A: FID vs training images (ImageNet 64x64)")
    for i, p in enumerate(literature_points):
        approx = p.get("mimg_approx") or p.get("fid_approx")
        c = f"C{(i + len(curves)) % 10}"
        ax.scatter(p["mimg"], p["fid"], s=60, marker="D", edgecolors=c, facecolors="none" if approx else c,
                   label=p["method"] + (" (position approx.)" if approx else ""))
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="hollow: x read off the paper's figure", title_fontsize=9)
    _footnote(fig, label)
    return fig


def fig2(teacher_steps: dict, middle_sigma: dict, label: str):
    """Fig 2: A FID of n-step teachers, B FID of 2-step teachers vs middle sigma; gray vs dataset, blue vs student.

    teacher_steps: n -> {"fid_data", "fid_student"}; middle_sigma: sigma -> the same.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, d, xl, title, logx in [(axes[0], teacher_steps, "teacher steps n", "A: n-step teachers", False),
                                   (axes[1], middle_sigma, "middle sigma of the 2-step teacher", "B: 2-step teachers", True)]:
        xs = sorted(d)
        for key, colour, name in [("fid_data", GRAY, "FID vs dataset"), ("fid_student", BLUE, "FID vs 1-step student")]:
            ys = [d[x].get(key, np.nan) if d[x].get(key) is not None else np.nan for x in xs]
            ax.plot(xs, ys, marker="o", color=colour, lw=2, label=name)
        if logx and xs:
            ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("FID (lower is better)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Fig 2: FID of teacher models")
    _footnote(fig, label)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def fig3(curves_a: dict, curves_b: dict, label: str):
    """Fig 3 (CIFAR-10): A D2O, D2O-F, CD, CD-F; B D2O, D2O-F, D2O+CD, D2O-F+CD; curves name -> [(mimg, fid)]."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    _curves(axes[0], curves_a, "A: freezing, GAN vs CD", logx=False)
    _curves(axes[1], curves_b, "B: extra CD loss", logx=False)
    for ax in axes:
        ax.set_yscale("log")
    fig.suptitle("Fig 3: FID vs training images (CIFAR-10, snapshots)")
    _footnote(fig, label)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _show(ax, img, diverging: bool = False, vmax: float | None = None):
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)                         # CHW -> HWC
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        v = vmax if vmax is not None else (np.abs(img).max() or 1.0)
        ax.imshow(img, cmap="RdBu_r" if diverging else "gray", vmin=-v if diverging else img.min(), vmax=v if diverging else img.max())
    else:
        ax.imshow(np.clip(img, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def _radial(fig, ax, prof, sigmas, title: str):
    prof, sigmas = np.asarray(prof), np.asarray(sigmas, dtype=np.float64)
    norm = LogNorm(sigmas.min(), sigmas.max()) if sigmas.min() > 0 and sigmas.max() > sigmas.min() else Normalize(sigmas.min(), sigmas.max() + 1e-12)
    cmap = plt.get_cmap("viridis")
    for t in range(prof.shape[0]):
        ax.plot(np.arange(prof.shape[1]), prof[t], color=cmap(norm(sigmas[t])), lw=1.5)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="sigma of the step")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("radius (FFT bins; small = low frequency)")
    ax.set_ylabel("radial mean of D_FFT (log-magnitude)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


FIG4_ROWS = ("I_t", "O_t", "O_t - O_{t-1}", "D_FFT(O_t, O_{t-1})", "O_t - I_t", "D_FFT(O_t, I_t)")


def fig4(rows: dict, sigmas, radial_b, radial_c, label: str, step_sigmas=None):
    """Fig 4: A image grid (rows x selected steps), B radial D_FFT(O_t, O_{t-1}), C radial D_FFT(O_t, I_t).

    rows: row name -> array (S, H, W) or (S, H, W, 3) (images in [-1, 1]; 2-D maps shown with a diverging map;
    rows with " - " in the name are differences, contrast-stretched per row). sigmas: (T,) noise levels of the
    radial profiles radial_b, radial_c: (T, R). step_sigmas: (S,) sigma of each grid column (titles).
    """
    names = list(rows)
    n_steps = max(np.asarray(r).shape[0] for r in rows.values()) if rows else 1
    fig = plt.figure(figsize=(max(12, 1.8 * n_steps + 3), 1.7 * len(names) + 5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.6 * max(len(names), 1), 4.5])
    axes = top.subplots(max(len(names), 1), n_steps, squeeze=False)
    for i, name in enumerate(names):
        arr = np.asarray(rows[name], dtype=np.float64)
        diff = " - " in name
        v = np.abs(arr).max() or 1.0
        for s in range(n_steps):
            ax = axes[i, s]
            if s >= arr.shape[0]:
                ax.axis("off")
                continue
            img = arr[s]
            if img.ndim == 3 and diff:
                img = 0.5 + 0.5 * img / v                     # contrast-enhanced difference
            elif img.ndim == 3:
                img = (img + 1) / 2
            _show(ax, img, diverging=img.ndim == 2, vmax=v if img.ndim == 2 else None)
            if s == 0:
                ax.set_ylabel(name, fontsize=10, rotation=0, ha="right", va="center")
            if i == 0 and step_sigmas is not None and s < len(step_sigmas):
                ax.set_title(f"sigma={float(step_sigmas[s]):.3g}", fontsize=10)
    top.suptitle("Fig 4A: inputs, outputs and their differences over sampling steps")
    axb, axc = bottom.subplots(1, 2)
    _radial(bottom, axb, radial_b, sigmas, "B: radial D_FFT(O_t, O_{t-1})")
    _radial(bottom, axc, radial_c, sigmas, "C: radial D_FFT(O_t, I_t)")
    _footnote(fig, label)
    return fig


def tile(images, ncols: int) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*H, ncols*W, C) array (blank cells are black)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"tile: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    out = np.zeros((nrows * h, ncols * w, c), np.uint8)
    for k in range(n):
        r, q = divmod(k, ncols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[k]
    return out


REAL_ROW = "dataset images"


def fig5(grids: dict, label: str, ncols: int = 8,
         title: str = "Fig 5: samples from the same seeds (EDM top, D2O middle, D2O-F bottom)"):
    """Fig 5: same-seed samples, rows EDM / D2O / D2O-F, one column per dataset.

    grids: dataset -> model -> uint8 (N, H, W, 3).
    """
    datasets = list(grids)
    models = list(dict.fromkeys(m for d in datasets for m in grids[d]))
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(5.5 * len(datasets), 2.0 * len(models) + 1), squeeze=False)
    for j, ds in enumerate(datasets):
        for i, m in enumerate(models):
            ax = axes[i, j]
            if m in grids[ds]:
                ax.imshow(tile(grids[ds][m], ncols))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(ds)
            if j == 0:
                ax.set_ylabel(m)
    fig.suptitle(title)
    _footnote(fig, label)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def grids(images: dict, label: str, ncols: int = 8):
    """Figs 7-21: the real images of each dataset (top row, REAL_ROW), then every model's samples from the same
    seeds. images: dataset -> row name -> uint8 (N, H, W, 3)."""
    return fig5(images, label, ncols, title="Samples from the same seeds, below real images of the dataset")


def fig6(feature_maps: dict, radial_shallow, radial_deep, sigmas, label: str):
    """Fig 6: A mean feature maps per decoder depth, B/C radial D_FFT of block output vs input over time.

    feature_maps: depth name -> (H, W) map; radial_shallow / radial_deep: (T, R); sigmas: (T,).
    """
    fig = plt.figure(figsize=(12, 8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.3])
    axes = top.subplots(1, max(len(feature_maps), 1), squeeze=False)[0]
    for ax, (name, fm) in zip(axes, feature_maps.items()):
        fm = np.asarray(fm, dtype=np.float64)
        im = ax.imshow(fm, cmap="magma")
        top.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"{name} ({fm.shape[-2]}x{fm.shape[-1]} px)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    top.suptitle("Fig 6A: average feature maps at decoder depths")
    axb, axc = bottom.subplots(1, 2)
    _radial(bottom, axb, radial_shallow, sigmas, "B: shallow (high-res) block")
    _radial(bottom, axc, radial_deep, sigmas, "C: deep (low-res) block")
    _footnote(fig, label)
    return fig


def sample_grid(images, ncols: int = 10) -> np.ndarray:
    """Figs 7-21: tile uint8 samples (N, H, W, C) into one PNG-ready uint8 array."""
    return tile(images, ncols)


def save_sample_grid(images, ncols: int, path: str | Path) -> Path:
    """Write the tiled grid of `images` as a PNG, atomically."""
    from PIL import Image
    arr = sample_grid(images, ncols)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(tmp)
    return Path(path)


def thesis(curves: dict, label: str):
    """Thesis demo: FID vs training images, GAN fine-tuning from diffusion-pretrained vs random-init tiny EDM."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    _curves(ax, curves, "GAN fine-tuning: diffusion-pretrained vs random init", logx=False)
    ax.set_yscale("log")
    _footnote(fig, label)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


GRID_MODELS = {"edm": "EDM", "d2o": "D2O", "d2o_f": "D2O-F", "scratch": "scratch"}


def grid_slot(slot: str) -> tuple[str, str]:
    """A grids / Fig 5 slot `<dataset>_<model>` (e.g. afhqv2_d2o_f) -> (dataset, model label "D2O-F")."""
    import re

    m = re.fullmatch(r"(.+?)_(edm|d2o_f|d2o|scratch)", slot)
    if not m:
        raise ValueError(f"grid slot {slot!r}: expected <dataset>_<model> with model one of {', '.join(GRID_MODELS)}")
    return m.group(1), GRID_MODELS[m.group(2)]

