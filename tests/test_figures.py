"""Figures: each function writes a non-empty PDF and a PNG of sensible size with the label drawn."""

import numpy as np
import pytest
from PIL import Image

from d2o import figures
from d2o.literature import load_literature

LABEL = "demo features, not comparable with the paper"
RNG = np.random.default_rng(0)


def _texts(fig):
    out = [t.get_text() for t in fig.texts]
    for sf in getattr(fig, "subfigs", []):
        out += [t.get_text() for t in sf.texts]
    return out


def _check(fig, tmp_path, name):
    assert LABEL in _texts(fig)
    pdf, png = figures.save(fig, tmp_path / name)
    assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:4] == b"%PDF"
    w, h = Image.open(png).size
    assert 500 <= w <= 5000 and 300 <= h <= 5000, (w, h)
    assert not list(tmp_path.glob(".*"))          # no temporary files left behind
    figures.plt.close(fig)


def test_fig1(tmp_path):
    curves = {"D2O (ours)": [(0.2, 3.6), (1, 2.0), (5, 1.5)], "D2O-F (ours)": [(0.2, 4.1), (5, 1.3)]}
    fig = figures.fig1(curves, load_literature().figure1, LABEL)
    assert fig.axes[0].get_xscale() == "log" and "Mimg" in fig.axes[0].get_xlabel()
    assert any("approx" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    _check(fig, tmp_path, "fig1")


def test_fig2(tmp_path):
    steps = {n: {"fid_data": 2.0 + 0.01 * n, "fid_student": 1.5 + 0.2 * n} for n in (2, 4, 6, 8, 10)}
    sig = {s: {"fid_data": 2.0, "fid_student": 1.0 + s} for s in (0.2, 0.8, 2.5, 10.0)}
    fig = figures.fig2(steps, sig, LABEL)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["FID vs dataset", "FID vs 1-step student"]
    assert lines[1].get_color() == figures.BLUE
    _check(fig, tmp_path, "fig2")


def test_fig3_and_thesis(tmp_path):
    a = {k: [(0.25 * i, 10 / (i + 1)) for i in range(1, 9)] for k in ("D2O", "D2O-F", "CD", "CD-F")}
    b = {k: [(0.25 * i, 8 / (i + 1)) for i in range(1, 9)] for k in ("D2O", "D2O-F", "D2O+CD", "D2O-F+CD")}
    _check(figures.fig3(a, b, LABEL), tmp_path, "fig3")
    _check(figures.thesis({"pretrained": [(0.01, 30), (0.05, 12)], "scratch": [(0.01, 300), (0.05, 250)]}, LABEL),
           tmp_path, "thesis")


def test_fig4(tmp_path):
    S, T, R = 5, 18, 16
    rows = {name: RNG.standard_normal((S, 32, 32, 3)).clip(-1, 1) if "FFT" not in name else RNG.standard_normal((S, 32, 32))
            for name in figures.FIG4_ROWS}
    sig = np.geomspace(80, 0.002, T)
    fig = figures.fig4(rows, sig, RNG.standard_normal((T, R)), RNG.standard_normal((T, R)), LABEL, step_sigmas=sig[:S])
    _check(fig, tmp_path, "fig4")


def test_fig5_and_sample_grid(tmp_path):
    grids = {ds: {m: RNG.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for m in ("EDM", "D2O", "D2O-F")}
             for ds in ("AFHQv2", "FFHQ")}
    _check(figures.fig5(grids, LABEL), tmp_path, "fig5")
    real = {ds: {figures.REAL_ROW: RNG.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), **rows} for ds, rows in grids.items()}
    fig = figures.grids(real, LABEL)
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == [figures.REAL_ROW, "EDM", "D2O", "D2O-F"]
    _check(fig, tmp_path, "grids")
    imgs = RNG.integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    g = figures.sample_grid(imgs, 10)
    assert g.shape == (24, 80, 3) and g.dtype == np.uint8
    assert (g[8:16, 8:16] == imgs[11]).all() and (g[16:, 24:] == 0).all()
    p = figures.save_sample_grid(imgs, 10, tmp_path / "grid.png")
    assert Image.open(p).size == (80, 24)
    with pytest.raises(ValueError, match="uint8"):
        figures.sample_grid(imgs.astype(np.float32), 4)


def test_fig6(tmp_path):
    fm = {"dec 8x8": RNG.random((8, 8)), "dec 16x16": RNG.random((16, 16)), "dec 32x32": RNG.random((32, 32))}
    sig = np.geomspace(80, 0.002, 10)
    _check(figures.fig6(fm, RNG.standard_normal((10, 22)), RNG.standard_normal((10, 5)), sig, LABEL), tmp_path, "fig6")


def test_grid_slot_names():
    from d2o.figures import grid_slot

    assert grid_slot("afhqv2_d2o_f") == ("afhqv2", "D2O-F") and grid_slot("cifar10_cond_edm") == ("cifar10_cond", "EDM")
    assert grid_slot("demo_scratch") == ("demo", "scratch")
    with pytest.raises(ValueError, match="grid slot 'afhqv2_sid'"):
        grid_slot("afhqv2_sid")
