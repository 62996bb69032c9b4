"""The paper's tables (1-6, 10-12) and the demo "thesis" table as LaTeX (booktabs) and Markdown.

One generic renderer and one declarative row spec per table. Literature rows come from d2o/data/literature.yaml
(d2o.literature); our rows are computed from `data`, each cell showing the reproduced value beside the paper's,
e.g. "1.71 (paper 1.66)", and the run (experiment) that produced it in the "Source / run" column.
Spec: d2o-reproduction-facts.md §10 (contents), §2 (Table 3 shares), §5 (Table 10).

Data contract (`data`): slot -> {"experiment", "fid", "fid_dataset", "is", "precision", "recall", "clip_fid",
"training_mimg", "params_m", "collapsed", "shares", "trainable_percent"}, any value missing or None.
Table 10 instead takes `table10_columns(...)`: per paper column, our hyper-parameters read off the typed settings of
the column's D2O and D2O-F experiments (keys d2o.literature.TABLE10_KEYS).
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from pathlib import Path

from tabulate import tabulate

from d2o.io import atomic_write_text
from d2o.literature import TABLE10_KEYS, Literature, load_literature

NOT_RUN = "not run in this config"
BEST = "best snapshot, as the authors selected"  # the lowest-FID snapshot (their README: released checkpoints)
CHECK, CROSS = "\u2713", "\u2717"
TABLES = ("table1", "table2", "table3", "table4", "table5", "table6", "table10", "table11", "table12", "thesis")


@dataclasses.dataclass(frozen=True)
class Col:
    header: str
    key: str                 # literature column / our-cell key
    digits: int | None = 2   # None: text column (printed as is)


@dataclasses.dataclass(frozen=True)
class Ours:
    label: str
    cells: dict              # col key -> (slot, metric) for a measured value, or a fixed string


@dataclasses.dataclass(frozen=True)
class Section:
    title: str | None
    match: dict | None       # literature rows whose fields equal these (None: no literature rows)
    ours: tuple = ()


@dataclasses.dataclass(frozen=True)
class Spec:
    title: str
    method_header: str
    cols: tuple
    sections: tuple
    notes: tuple = ()


def _d2o_pair(label_slots: dict, nfe=True):
    """D2O and D2O-F rows: label_slots = {"D2O (ours)": {col: (slot, metric)}, ...}."""
    return tuple(Ours(lab, ({"nfe": "1"} if nfe else {}) | cells) for lab, cells in label_slots.items())


SCRATCH, POST = "Training From Scratch", "Post-training"
SPECS = {
    "table1": Spec("Table 1: discriminators (CIFAR-10 unconditional, FID)", "Discriminator", (Col("FID (\u2193)", "fid"),), (
        Section(None, None, tuple(Ours(lab, {"fid": (slot, "fid")}) for lab, slot in [
            ("StyleGAN2 (Scratch)", "stylegan2_scratch"), ("StyleGAN2 (Pre-trained)", "stylegan2_pretrained"),
            ("VGG16", "vgg16"), ("LPIPS", "lpips"), ("PG", "pg")])),),
        ("Only the PG row is reproducible from the released code; the other discriminators are re-designed (spec 3.6).",)),
    "table2": Spec("Table 2: augmentation and R1 (PG discriminator, CIFAR-10 unconditional)", "Setting",
        (Col("Augmentation", "aug", None), Col("\u03b3_r1", "gamma", None), Col("FID (\u2193)", "fid")), (
        Section(None, None, tuple(Ours(lab, {"aug": aug, "gamma": g, "fid": (slot, "fid")}) for lab, aug, g, slot in [
            ("diffAug, no R1", CHECK, "-", "diffaug_no_r1"), ("no diffAug, no R1", CROSS, "-", "no_diffaug_no_r1"),
            ("\u03b3_r1 = 1e-3", CROSS, "1e-3", "gamma_1e-3"), ("\u03b3_r1 = 1e-4", CROSS, "1e-4", "gamma_1e-4"),
            ("\u03b3_r1 = 1e-5", CROSS, "1e-5", "gamma_1e-5")])),)),
    "table3": Spec("Table 3: D2O-F freezing ablation (CIFAR-10 unconditional)", "--freeze",
        (Col("Norm ({norm})", "norm", None), Col("Conv ({conv})", "conv", None), Col("QKV ({qkv})", "qkv", None),
         Col("Skip ({skip})", "skip", None), Col("Tunable params (%)", "trainable_percent", 1), Col("FID (\u2193)", "fid")), (
        Section(None, None, tuple(
            Ours(lab, dict(zip(("norm", "conv", "qkv", "skip"), marks)) | {"fid": (slot, "fid"), "trainable_percent": (slot, "trainable_percent")})
            for lab, marks, slot in [
                ("0 (D2O)", (CHECK,) * 4, "freeze0"), ("1 (D2O-F)", (CHECK, CROSS, CHECK, CHECK), "freeze1"),
                ("2", (CHECK, CROSS, CROSS, CHECK), "freeze2"), ("3", (CHECK, CROSS, CROSS, CROSS), "freeze3")])),),
        (f"{CHECK} tunable, {CROSS} frozen. Header: share of all generator parameters per group, as accounting: ours (d2o.freezing's Table 3 groups) and the paper's.",
         "Tunable params: what each run trained, with the released code's freeze rule (freeze_rule: authors; 84.40% frozen at level 1 on CIFAR-10).",
         "The paper's Conv/Norm shares are matched only approximately by any accounting of the code's freeze rule (spec 2).")),
    "table4": Spec("Table 4: CIFAR-10", "Method",
        (Col("NFE (\u2193)", "nfe", None), Col("Uncond. FID (\u2193)", "fid_uncond"), Col("IS (\u2191)", "is"),
         Col("Cond. FID (\u2193)", "fid_cond")), (
        Section(SCRATCH, {"section": "scratch"}),
        Section(POST, {"section": "post"}, _d2o_pair({
            "D2O (ours)": {"fid_uncond": ("d2o_uncond", "fid"), "is": ("d2o_uncond", "is"), "fid_cond": ("d2o_cond", "fid")},
            "D2O-F (ours)": {"fid_uncond": ("d2o_f_uncond", "fid"), "is": ("d2o_f_uncond", "is"), "fid_cond": ("d2o_f_cond", "fid")}}))),
        ("Score SDE and DPM-Solve-3 values sit in the conditional column as in the text extraction of the paper (check the PDF).",)),
    "table5": Spec("Table 5: AFHQv2 64x64 and FFHQ 64x64 (unconditional)", "Method",
        (Col("NFE (\u2193)", "nfe", None), Col("AFHQv2 FID (\u2193)", "fid_afhqv2"), Col("FFHQ FID (\u2193)", "fid_ffhq")), (
        Section(SCRATCH, {"section": "scratch"}),
        Section(POST, {"section": "post"}, _d2o_pair({
            "D2O (ours)": {"fid_afhqv2": ("d2o_afhqv2", "fid"), "fid_ffhq": ("d2o_ffhq", "fid")},
            "D2O-F (ours)": {"fid_afhqv2": ("d2o_f_afhqv2", "fid"), "fid_ffhq": ("d2o_f_ffhq", "fid")}}))),
        ("The paper's EDM row gives EDM's VP-model FIDs; the VE checkpoints that D2O fine-tunes score 2.17 / 2.60 (Fig 13, 16).",)),
    "table6": Spec("Table 6: ImageNet 64x64 (class-conditional)", "Method",
        (Col("NFE (\u2193)", "nfe", None), Col("FID (\u2193)", "fid"), Col("Prec. (\u2191)", "precision"),
         Col("Rec. (\u2191)", "recall")), (
        Section(SCRATCH, {"section": "scratch"}),
        Section(POST, {"section": "post"}, _d2o_pair({
            lab: {"fid": (slot, "fid"), "precision": (slot, "precision"), "recall": (slot, "recall")}
            for lab, slot in [("D2O (ours)", "d2o_imagenet"), ("D2O-F (ours)", "d2o_f_imagenet")]}))),
        ("Precision / recall: k = 3 on Inception pool_3 features, squared distances in float16 as guided-diffusion's "
         "evaluator computes them (the paper's); the same in float32 is in each pr.json (value.fp32).",)),
    "table11": Spec("Table 11: CLIP-FID, FID and training images", "Model",
        (Col("CLIP-FID (\u2193)", "clip_fid"), Col("FID (\u2193)", "fid"), Col("Training images (M)", "training_images", 0)),
        tuple(Section(ds, {"dataset": ds}, (Ours("D2O-F (ours)", {"clip_fid": (slot, "clip_fid"), "fid": (slot, "fid"),
                                                                   "training_images": (slot, "training_mimg")}),))
              for ds, slot in [("CIFAR10", "cifar10_d2o_f"), ("FFHQ", "ffhq_d2o_f"), ("AFHQv2", "afhqv2_d2o_f"),
                               ("ImageNet", "imagenet_d2o_f")]),
        ("The paper's D2O-F FIDs here (1.56 / 0.83 / 1.24 / 1.13) differ from Tables 4-6 (1.54 / 0.85 / 1.31 / 1.16).",
         "CLIP-FID: FID on CLIP ViT-B/32 image features (spec 8; the paper's exact procedure is unverified).")),
    "table12": Spec("Table 12: distilled one-step generators on ImageNet 64x64", "Method",
        (Col("FID (\u2193)", "fid"), Col("Training images (M) (\u2193)", "training_mimg", 0), Col("Params (M)", "params_m", 0)), (
        Section(None, {}, (Ours("D2O-F (EDM) (ours)", {c: ("d2o_f_imagenet", c) for c in ("fid", "training_mimg", "params_m")}),)),),
        ("ADM parameter count computed from the constructor: 295.9M (the paper prints 280M; spec 1.2).",)),
    "thesis": Spec("Thesis demo: GAN fine-tuning from a diffusion-pretrained tiny EDM vs from random initialization",
        "Generator initialization", (Col("FID (\u2193)", "fid"), Col("Training images (Mimg)", "training_mimg", 3)), (
        Section(None, None, (Ours("diffusion-pretrained tiny EDM", {"fid": ("pretrained", "fid"), "training_mimg": ("pretrained", "training_mimg")}),
                             Ours("random initialization", {"fid": ("scratch", "fid"), "training_mimg": ("scratch", "training_mimg")}))),),
        ("Same GAN objective, discriminator and training budget; only the generator's initialization differs (paper Section 4.1 claim).",
         "The paper has no such table: no paper values.")),
}
TABLE10_ROWS = [("arch", "G architecture"), ("lr_g", "G LR"), ("lr_d", "D LR"), ("batch", "Batch size"),
                ("r1_gamma", "\u03b3_r1 (regularization)"), ("ema_halflife_mimg", "EMA half-life (Mimg)"),
                ("ema_rampup", "EMA warm-up ratio"), ("duration_mimg_d2o", "Training images, D2O (Mimg)"),
                ("duration_mimg_d2o_f", "Training images, D2O-F (Mimg)"), ("bf16", "Mixed precision (BF16)"),
                ("dropout", "Dropout probability"), ("augment", "Augmentations"), ("gpus", "Number of GPUs")]
TABLE10_HEADERS = {"cifar10": "CIFAR-10", "afhqv2": "AFHQv2 64x64", "ffhq": "FFHQ 64x64", "imagenet": "ImageNet 64x64"}
_PAPER_DATASET = {"cifar10": "cifar10", "afhqv2": "afhqv2", "ffhq": "ffhq", "imagenet": "imagenet64"}  # registry names
DIFFERS = "\u2020"  # dagger: our value differs from the paper's
assert [k for k, _ in TABLE10_ROWS] == TABLE10_KEYS


# ---------------------------------------------------------------------------------------------------------------
# Formatting.

def fmt(v, digits: int | None = 2, approx: bool = False) -> str:
    """A number with fixed decimals, "collapse", or "-" for a missing value; "~" prefix if approximate."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "Yes" if v else "No"
    s = str(v) if digits is None else f"{v:.{digits}f}"
    return ("~" if approx else "") + s


def fmt_hparam(v) -> str:
    """Table 10 style: 1e-4, 0.05, 256, Yes/No."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "Yes" if v else "No"
    if isinstance(v, float) and v != 0 and abs(v) < 1e-2:
        m, e = f"{v:.1e}".split("e")
        return f"{m.rstrip('0').rstrip('.')}e{int(e)}"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return str(int(v))
    return str(v)


def _ours_cell(data: dict, slot: str, metric: str, paper, digits: int | None, paper_approx=False) -> str:
    """Our value beside the paper's: "1.71 (paper 1.66)", "collapse (FID 93.20)", "- (paper 1.66)"."""
    entry = data.get(slot) or {}
    v = entry.get(metric)
    if entry.get("collapsed") and metric.startswith("fid"):
        s = f"collapse (FID {fmt(v, digits)})" if v is not None else "collapse"
    else:
        s = fmt(v, digits)
    return s if paper is None else f"{s} (paper {fmt(paper, digits, paper_approx)})"


# ---------------------------------------------------------------------------------------------------------------
# Building the table model: (headers, [(section title | None, [row cells])], notes).

def _runs(data: dict, slots) -> str:
    parts = []
    for slot in dict.fromkeys(slots):
        if slot not in data or data[slot] is None:
            parts.append(f"{slot}: {NOT_RUN}")
        else:
            parts.append(f"ours: {data[slot].get('experiment') or slot}")
    return "; ".join(dict.fromkeys(parts))


def _table3_headers(data: dict, lit: Literature) -> dict:
    ours = next((e["shares"] for e in data.values() if e and e.get("shares")), None)
    out = {}
    for g in ("norm", "conv", "qkv", "skip"):
        p = lit.own_value("table3", "shares", g)
        o = None if ours is None else ours.get(g)
        out[g] = f"paper {p:.1f}%" if o is None else f"ours {o:.1f}%, paper {p:.1f}%"
    return out


def _build(name: str, data: dict, lit: Literature):
    spec = SPECS[name]
    fill = _table3_headers(data, lit) if name == "table3" else {}
    headers = [spec.method_header] + [c.header.format(**fill) for c in spec.cols] + ["Source / run"]
    lit_rows = lit.tables[name]["rows"] if name in lit.tables else []
    sections = []
    for sec in spec.sections:
        rows = []
        for r in lit_rows if sec.match is not None else []:
            if any(r.get(k) != v for k, v in sec.match.items()):
                continue
            measure = {c: t for c, t in (r.get("measure") or {}).items() if t[0] in data and data[t[0]] is not None}
            cells = [r["method"]]
            for c in spec.cols:
                if c.key in measure:
                    cells.append(_ours_cell(data, *measure[c.key], r.get(c.key), c.digits))
                else:
                    cells.append(fmt(r.get(c.key), c.digits, r.get("approx", False) and c.key == "training_images"))
            src = r["cite"] + ("; " + _runs(data, [t[0] for t in measure.values()]) if measure else "")
            rows.append(cells + [src])
        for o in sec.ours:
            rows.append(_ours_row(name, spec, o, o.label, data, lit))
            best = {slot: (data.get(slot) or {}).get("best") for slot in _slots(o)}
            if any(best.values()):  # the run's lowest-FID snapshot, evaluated the same way
                rows.append(_ours_row(name, spec, o, f"{o.label}, {BEST}", best, lit))
        sections.append((sec.title, rows))
    notes = list(spec.notes)
    picks = []
    budgets: dict[float, dict[str, None]] = {}  # training Mimg -> our runs (final models; sampler baselines have none)
    for sec in spec.sections:
        for o in sec.ours:
            for slot in _slots(o):
                d = data.get(slot) or {}
                if d.get("fid_dataset") is not None:
                    notes.append(f"{o.label} ({slot}): FID vs statistics of the prepared dataset = {fmt(d['fid_dataset'])}.")
                b = d.get("best")
                if b:
                    picks.append(f"{b['experiment']} at {fmt(b['training_mimg'], 3)} Mimg (snapshot FID "
                                 f"{fmt(b.get('snapshot_fid'))})")
                if d.get("training_mimg") is not None:
                    budgets.setdefault(d["training_mimg"], {})[d["experiment"]] = None
    if picks:
        notes.append(f"{BEST.capitalize()}: the snapshot with the lowest snapshot FID (eval.snapshot_num_samples images), "
                     f"then evaluated like the final model: {'; '.join(dict.fromkeys(picks))}.")
    if len(budgets) > 1:
        notes.append("Training budgets differ between rows (compare rows of equal budget): " + "; ".join(
            f"{', '.join(names)} {mimg:g} Mimg" for mimg, names in sorted(budgets.items(), reverse=True)) + ".")
    return spec.title, headers, sections, notes


def _slots(o: Ours) -> list[str]:
    return list(dict.fromkeys(v[0] for v in o.cells.values() if isinstance(v, tuple)))


def _ours_row(name: str, spec: Spec, o: Ours, label: str, data: dict, lit: Literature) -> list[str]:
    """One of our rows: every measured cell beside the paper's value, and the runs it comes from."""
    cells, slots = [label], []
    for c in spec.cols:
        v = o.cells.get(c.key)
        if isinstance(v, tuple):
            slot, metric = v
            slots.append(slot)
            entry = lit.own(name, slot, metric)
            cells.append(_ours_cell(data, slot, metric, entry and entry["value"], c.digits,
                                    bool(entry and entry.get("approx"))))
        else:
            cells.append("-" if v is None else v)
    return cells + [_runs(data, slots)]


def table10_slot(slot: str) -> tuple[str, str]:
    """A Table 10 slot `<column>_d2o` / `<column>_d2o_f` -> (paper column, "d2o" | "d2o_f")."""
    m = re.fullmatch(r"(cifar10|afhqv2|ffhq|imagenet)_(d2o_f|d2o)", slot)
    if not m:
        raise ValueError(f"table10 slot {slot!r}: expected <column>_d2o or <column>_d2o_f with column one of "
                         f"{', '.join(TABLE10_HEADERS)}")
    return m.group(1), m.group(2)


def table10_columns(slots: dict, experiments: dict, architectures: dict) -> dict:
    """Per paper column: our value of every Table 10 row, from the typed settings (d2o.settings.Experiment) of the
    column's D2O and D2O-F experiments. `architectures`: checkpoint name -> architecture (registry). A row where
    D2O and D2O-F differ holds both; the D2O-F duration is its own row. JSON-able (rule params)."""
    from d2o.generator import GENERATOR_DROPOUT

    runs: dict = {}
    for slot, name in slots.items():
        column, variant = table10_slot(slot)
        runs.setdefault(column, {})[variant] = name

    def values(e) -> dict:
        t, d = e.training, e.training.discriminator
        augment = d is not None and (bool(d.diffaug) or d.ada_target is not None)
        return {"arch": architectures.get(t.init), "lr_g": t.lr_g, "lr_d": t.lr_d, "batch": t.batch,
                "r1_gamma": t.r1_gamma, "ema_halflife_mimg": t.ema_halflife_mimg, "ema_rampup": t.ema_rampup,
                "duration_mimg": t.duration_mimg, "bf16": t.precision == "bf16", "dropout": GENERATOR_DROPOUT,
                "augment": augment, "gpus": e.resources.gpus}

    out = {}
    for column, variants in runs.items():
        v = {k: values(experiments[n]) for k, n in variants.items()}
        main = v.get("d2o") or v["d2o_f"]
        cell = {}
        for key in TABLE10_KEYS:
            if key == "duration_mimg_d2o":
                cell[key] = [v["d2o"]["duration_mimg"]] if "d2o" in v else None
            elif key == "duration_mimg_d2o_f":
                cell[key] = [v["d2o_f"]["duration_mimg"]] if "d2o_f" in v else None
            else:
                both = [main[key]] + ([v["d2o_f"][key]] if "d2o" in v and "d2o_f" in v else [])
                cell[key] = both if len(both) == 1 or both[0] != both[1] else both[:1]
        datasets = sorted({experiments[n].dataset for n in variants.values()})
        out[column] = {"values": cell, "experiments": dict(variants), "datasets": datasets}
    return out


def _build_table10(data: dict, lit: Literature):
    """`data` = table10_columns(...). Every cell: ours (paper x), marked where they differ."""
    paper = lit.table10["columns"]
    cols = [c for c in paper if c in data] + [c for c in data if c not in paper]
    headers = ["Hyper-parameter"] + [TABLE10_HEADERS.get(c, c) + (f" [{', '.join(data[c]['datasets'])}]"
                                                                   if data[c]["datasets"] != [_PAPER_DATASET.get(c)] else "")
                                     for c in cols]

    def norm(v):
        if isinstance(v, str):
            return "".join(ch for ch in v.lower().replace("+", "p") if ch.isalnum())
        return v

    def same(a, b):
        if a is None or b is None:
            return a is b
        if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
            return norm(a) == norm(b)
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)

    rows, differ = [], 0
    for key, label in TABLE10_ROWS:
        cells = [label]
        for c in cols:
            ours, p = data[c]["values"].get(key), paper.get(c, {}).get(key)
            if ours is None:
                cells.append(f"{NOT_RUN} (paper {fmt_hparam(p)})")
                continue
            text = fmt_hparam(ours[0]) + (f" (D2O-F {fmt_hparam(ours[1])})" if len(ours) > 1 else "")
            bad = any(not same(o, p) for o in ours)
            differ += bad
            cells.append(f"{DIFFERS if bad else ''}{text} (paper {fmt_hparam(p)})")
        rows.append(cells)
    notes = [f"Ours: the registry's settings of each column's D2O and D2O-F experiments "
             f"({'; '.join(f'{TABLE10_HEADERS.get(c, c)}: ' + ', '.join(data[c]['experiments'].values()) for c in cols)}); "
             f"the paper's Table 10 value in brackets; {DIFFERS} marks the {differ} cells that differ.",
             "G architecture: the init checkpoint's (registry `checkpoints.<name>.architecture`, checked when the "
             "checkpoint is converted). GPUs: resources.gpus (with batch_gpu fixed, other counts compute the same iteration).",
             "All columns (paper): Adam, beta1 = 0, beta2 = 0.99, no weight decay, no gradient clipping, no LR schedule."]
    missing = [TABLE10_HEADERS[c] for c in paper if c not in data]
    if missing:
        notes.append(f"{', '.join(missing)}: {NOT_RUN}.")
    return "Table 10: hyper-parameters of D2O and D2O-F", headers, [(None, rows)], notes


# ---------------------------------------------------------------------------------------------------------------
# Rendering.

_LATEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                CHECK: r"$\checkmark$", CROSS: r"$\times$", "\u2193": r"$\downarrow$", "\u2191": r"$\uparrow$",
                "\u03b3": r"$\gamma$", DIFFERS: r"$\dagger$", "\u03b1": r"$\alpha$", "\u2264": r"$\leq$", "\u03c3": r"$\sigma$"}


def latex_escape(s: str) -> str:
    """Escape LaTeX specials and map the few non-ASCII symbols used here; other non-ASCII is transliterated."""
    out = []
    for ch in str(s):
        if ch in _LATEX_CHARS:
            out.append(_LATEX_CHARS[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def _latex(title, headers, sections, notes, label) -> str:
    n = len(headers)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(title)} [{latex_escape(label)}]}}",
             r"\begin{tabular}{" + "l" * n + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    for i, (sec, rows) in enumerate(sections):
        if i > 0:
            lines.append(r"\midrule")
        if sec:
            lines.append(rf"\multicolumn{{{n}}}{{l}}{{\textit{{{latex_escape(sec)}}}}} \\")
        lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\midrule", rf"\multicolumn{{{n}}}{{l}}{{\textit{{Label: {latex_escape(label)}}}}} \\",
              r"\bottomrule", r"\end{tabular}", r"\par\smallskip\footnotesize"]
    lines += [latex_escape(s) + r"\par" for s in [f"Label: {label}."] + notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def standalone(fragment: str) -> str:
    """Wrap a `table` fragment in a complete document that compiles with plain pdflatex."""
    return "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}",
                      r"\usepackage{amssymb}", r"\usepackage[landscape,margin=1.5cm]{geometry}",
                      r"\pagestyle{empty}", r"\begin{document}", fragment.rstrip("\n"), r"\end{document}"]) + "\n"


def _markdown(title, headers, sections, notes, label) -> str:
    body = []
    for sec, rows in sections:
        if sec:
            body.append([f"**{sec}**"] + [""] * (len(headers) - 1))
        body += rows
    body.append([f"*Label: {label}*"] + [""] * (len(headers) - 1))
    md = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    bullets = "\n".join(f"- {s}" for s in [f"Label: {label}."] + notes)
    return f"**{title}** [{label}]\n\n{md}\n\nNotes:\n{bullets}\n"


def make_table(name: str, data: dict | None, literature: Literature | None, label: str,
               standalone_doc: bool = True) -> tuple[str, str]:
    """Render table `name` (one of TABLES) -> (LaTeX, Markdown).

    LaTeX is a complete pdflatex document (booktabs) unless standalone_doc=False (then a `table` fragment).
    `label` ("paper protocol" / "demo features, not comparable with the paper") goes in the caption and the body.
    """
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; expected one of {TABLES}")
    lit = literature if literature is not None else load_literature()
    data = dict(data or {})
    model = _build_table10(data, lit) if name == "table10" else _build(name, data, lit)
    tex = _latex(*model, label)
    return (standalone(tex) if standalone_doc else tex), _markdown(*model, label)


def write_table(name: str, data: dict | None, literature: Literature | None, label: str,
                tex_path: str | Path, md_path: str | Path) -> None:
    """make_table and write both files atomically."""
    tex, md = make_table(name, data, literature, label)
    atomic_write_text(tex_path, tex)
    atomic_write_text(md_path, md)
