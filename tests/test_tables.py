"""Tables: every table renders for empty / partial / full data, escaping, labels, literature rows, pdflatex."""

import shutil
import subprocess

import pytest
import yaml

from d2o import tables
from d2o.literature import DEFAULT_PATH, LiteratureError, load_literature, validate

LIT = load_literature()
PAPER, DEMO = "paper protocol", "demo features, not comparable with the paper"
SLOTS = {
    "table1": ["pg", "vgg16", "lpips", "stylegan2_scratch", "stylegan2_pretrained"],
    "table2": ["diffaug_no_r1", "no_diffaug_no_r1", "gamma_1e-3", "gamma_1e-4", "gamma_1e-5"],
    "table3": ["freeze0", "freeze1", "freeze2", "freeze3"],
    "table4": ["edm_uncond", "edm_cond", "d2o_uncond", "d2o_f_uncond", "d2o_cond", "d2o_f_cond"],
    "table5": ["edm_afhqv2", "edm_ffhq", "d2o_afhqv2", "d2o_f_afhqv2", "d2o_ffhq", "d2o_f_ffhq"],
    "table6": ["edm_imagenet", "d2o_imagenet", "d2o_f_imagenet"],
    "table11": ["cifar10_edm", "cifar10_d2o_f", "ffhq_edm", "ffhq_d2o_f", "afhqv2_edm", "afhqv2_d2o_f",
                "imagenet_edm", "imagenet_d2o_f"],
    "table12": ["d2o_f_imagenet"],
    "thesis": ["pretrained", "scratch"],
}


def table10_data(config_path="config/config.yaml", **changes):
    """Table 10's data from a real registry (d2o.tables.table10_columns over its typed settings)."""
    from d2o.config import checkpoint_architectures, experiment_settings, load_config

    cfg = load_config(config_path)
    for name, keys in changes.items():
        cfg["experiments"][name].update(keys)
    exps = {n: experiment_settings(cfg, n) for n in cfg["experiments"]}
    return tables.table10_columns(cfg["tables"]["table10"]["slots"], exps, checkpoint_architectures(cfg))


def full_entry(i):
    return {"experiment": f"run_{i}", "fid": 1.5 + i / 100, "fid_dataset": 1.6, "is": 10.0, "precision": 0.7,
            "recall": 0.6, "clip_fid": 0.5, "training_mimg": 5.0, "params_m": 295.9, "collapsed": False,
            "shares": {"norm": 7.76, "conv": 84.4, "qkv": 2.1, "skip": 3.96, "other": 1.78}, "trainable_percent": 15.6}


def datasets(name):
    if name == "table10":
        full = table10_data()
        return {"empty": {}, "partial": {"cifar10": full["cifar10"]}, "full": full}
    slots = SLOTS[name]
    return {"empty": {}, "partial": {slots[0]: {"experiment": "only_one", "fid": None}},
            "full": {s: full_entry(i) for i, s in enumerate(slots)}}


@pytest.mark.parametrize("name", tables.TABLES)
@pytest.mark.parametrize("which", ["empty", "partial", "full"])
@pytest.mark.parametrize("label", [PAPER, DEMO])
def test_renders_with_label(name, which, label):
    tex, md = tables.make_table(name, datasets(name)[which], LIT, label)
    assert tex.startswith(r"\documentclass{article}") and r"\end{document}" in tex
    for s in (r"\toprule", r"\midrule", r"\bottomrule", r"\usepackage{booktabs}"):
        assert s in tex
    assert tex.isascii()
    esc = tables.latex_escape(label)
    assert tex.count(esc) >= 3                     # caption, table body, notes
    assert md.count(label) >= 3
    cap_line = next(line for line in tex.splitlines() if line.startswith(r"\caption"))
    assert esc in cap_line
    if which == "empty":
        assert tables.NOT_RUN in md and tables.NOT_RUN in tex


def test_ours_beside_paper_and_run_name():
    data = {"d2o_uncond": {"experiment": "cifar_uncond_d2o", "fid": 1.71, "is": 10.05},
            "d2o_f_cond": {"experiment": "cifar_cond_d2o_f", "fid": 77.3, "collapsed": True}}
    tex, md = tables.make_table("table4", data, LIT, PAPER)
    assert "1.71 (paper 1.66)" in md and "10.05 (paper 10.11)" in md
    assert "collapse (FID 77.30) (paper 1.44)" in md
    assert "ours: cifar_uncond_d2o" in md and r"cifar\_uncond\_d2o" in tex
    assert "- (paper 1.58)" in md                  # d2o_cond missing
    assert "d2o_cond: " + tables.NOT_RUN in md


def test_literature_rows_and_sections():
    _, md = tables.make_table("table4", {}, LIT, PAPER)
    sid = next(line for line in md.splitlines() if "SiD, alpha=1.2" in line)
    assert "1.92" in sid and "9.98" in sid and "1.71" in sid
    assert "Training From Scratch" in md and "Post-training" in md
    assert md.index("Training From Scratch") < md.index("DDPM") < md.index("Post-training") < md.index("PD ")
    _, md6 = tables.make_table("table6", {}, LIT, PAPER)
    assert "MSD, 4 students, ADM" in md6 and "16.30" in md6
    _, md12 = tables.make_table("table12", {}, LIT, PAPER)
    assert "1119" in md12 and "- (paper 280)" in md12


def test_measured_baseline_row():
    _, md = tables.make_table("table4", {"edm_uncond": {"experiment": "edm_cifar_uncond", "fid": 2.01}}, LIT, PAPER)
    edm = next(line for line in md.splitlines() if line.startswith("| EDM"))
    assert "2.01 (paper 1.98)" in edm and "edm_cifar_uncond" in edm and "1.79" in edm


def test_table3_shares_header():
    data = {"freeze1": {"experiment": "f1", "fid": 1.6, "shares": {"norm": 7.76, "conv": 84.4, "qkv": 2.1, "skip": 3.96}}}
    _, md = tables.make_table("table3", data, LIT, PAPER)
    assert "Conv (ours 84.4%, paper 85.8%)" in md
    _, md0 = tables.make_table("table3", {}, LIT, PAPER)
    assert "Conv (paper 85.8%)" in md0


def test_rows_of_different_training_budgets_are_named_in_a_note():
    same = {f"freeze{i}": dict(full_entry(i), training_mimg=0.015) for i in range(4)}
    _, md = tables.make_table("table3", same, LIT, PAPER)
    assert "Training budgets differ" not in md
    short = dict(same, freeze2=dict(same["freeze2"], training_mimg=0.001), freeze3=dict(same["freeze3"], training_mimg=0.001))
    tex, md = tables.make_table("table3", short, LIT, PAPER)
    assert ("Training budgets differ between rows (compare rows of equal budget): run_0, run_1 0.015 Mimg; "
            "run_2, run_3 0.001 Mimg.") in md and "Training budgets differ" in tex


def test_table10_from_the_paper_registry():
    """Rendered from config/config.yaml: one column per dataset (D2O and D2O-F merged), ours beside the paper's in
    every cell, differing cells marked; the registry follows Table 10, so nothing differs."""
    data = table10_data()
    assert list(data) == ["cifar10", "afhqv2", "ffhq", "imagenet"]
    assert data["imagenet"]["experiments"] == {"d2o": "imagenet64-d2o", "d2o_f": "imagenet64-d2o-f"}
    _, md = tables.make_table("table10", data, LIT, PAPER)
    header = md.splitlines()[2]
    assert header.count("|") == 6 and "ImageNet 64x64" in header and "d2o" not in header.lower()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()[4:]
            if line.startswith("|") and "Label" not in line}
    assert rows["G architecture"] == ["NCSN++ (paper NCSN++)"] * 3 + ["ADM (paper ADM)"]
    assert rows["Training images, D2O-F (Mimg)"] == ["5 (paper 5)", "10 (paper 10)", "10 (paper 10)", "5 (paper 5)"]
    assert rows["\u03b3_r1 (regularization)"][3] == "4e-4 (paper 4e-4)"
    assert rows["Number of GPUs"] == ["8 (paper 8)"] * 4
    assert all("(paper" in c and tables.DIFFERS not in c for r in rows.values() for c in r)
    assert "marks the 0 cells that differ" in md


def test_table10_marks_what_differs():
    """An edit of the registry shows in Table 10: the train.sh ImageNet gamma, 4 GPUs, a D2O-F-only learning rate."""
    data = table10_data(**{"imagenet64-d2o": {"r1_gamma": 1e-4, "resources": {"gpus": 4, "hours": 30}},
                           "imagenet64-d2o-f": {"r1_gamma": 1e-4, "lr_g": 1e-5}})
    _, md = tables.make_table("table10", data, LIT, PAPER)
    line = lambda key: next(l for l in md.splitlines() if key in l)  # noqa: E731
    assert f"{tables.DIFFERS}1e-4 (paper 4e-4)" in line("regularization")
    assert f"{tables.DIFFERS}4 (paper 8)" in line("Number of GPUs")
    assert f"{tables.DIFFERS}8e-6 (D2O-F 1e-5) (paper 8e-6)" in line("G LR")
    assert "marks the 3 cells that differ" in md


def test_table10_from_the_demo_registry_names_its_dataset():
    _, md = tables.make_table("table10", table10_data("config/demo.yaml"), LIT, DEMO)
    assert "CIFAR-10 [shapes16]" in md and "AFHQv2 64x64, FFHQ 64x64, ImageNet 64x64: not run in this config" in md


def test_latex_escape():
    assert tables.latex_escape("a_b & 50% #1 $x {y} ~z ^ \\") == (
        r"a\_b \& 50\% \#1 \$x \{y\} \textasciitilde{}z \textasciicircum{} \textbackslash{}")
    assert tables.latex_escape("\u2713\u2717\u03b3") == r"$\checkmark$$\times$$\gamma$"
    tex, _ = tables.make_table("table2", {"gamma_1e-4": {"experiment": "r1_1e-4&x", "fid": 1.7}}, LIT, PAPER)
    assert r"r1\_1e-4\&x" in tex and r"$\gamma$" in tex


def test_literature_validation_names_key(tmp_path):
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["tables"]["table4"]["rows"][3]["fid_cond"] = "abc"
    with pytest.raises(LiteratureError, match=r"tables\.table4\.rows\[3\]\.fid_cond"):
        validate(raw, "lit.yaml")
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    del raw["own_results"][5]["value"]
    with pytest.raises(LiteratureError, match=r"own_results\[5\].*value"):
        validate(raw, "lit.yaml")
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["own_results"].append(dict(raw["own_results"][0]))
    with pytest.raises(LiteratureError, match="duplicate"):
        validate(raw, "lit.yaml")
    with pytest.raises(LiteratureError, match="not found"):
        load_literature(tmp_path / "missing.yaml")


def test_literature_lookup():
    assert LIT.row("table4", "SiD, alpha=1.2")["fid_uncond"] == 1.92
    assert LIT.row("table6", "CD", nfe=2)["fid"] == 4.70
    assert LIT.own_value("table4", "d2o_f_uncond", "fid") == 1.54
    assert LIT.own_value("table1", "stylegan2_scratch", "fid") == "collapse"
    approx = [p for p in LIT.figure1 if p["mimg_approx"]]
    assert {p["method"] for p in LIT.figure1 if not p["mimg_approx"]} >= {"BOOT", "DMD"} and len(approx) >= 8


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not on PATH")
def test_pdflatex_compiles_table4(tmp_path):
    tex, _ = tables.make_table("table4", datasets("table4")["full"], LIT, DEMO)
    (tmp_path / "t4.tex").write_text(tex)
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t4.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "t4.pdf").stat().st_size > 1000


def test_write_table(tmp_path):
    tables.write_table("table5", {}, LIT, PAPER, tmp_path / "t5.tex", tmp_path / "t5.md")
    assert (tmp_path / "t5.tex").read_text().startswith(r"\documentclass")
    assert "AFHQv2" in (tmp_path / "t5.md").read_text()


def test_table10_slot_names():
    assert tables.table10_slot("imagenet_d2o_f") == ("imagenet", "d2o_f")
    with pytest.raises(ValueError, match="table10 slot 'imagenet64_d2o'"):
        tables.table10_slot("imagenet64_d2o")
