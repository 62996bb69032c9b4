"""One paper figure (PDF + PNG) from DAG artefacts: training curves, metric files, frequency analysis, grids."""
from pathlib import Path

import numpy as np

from d2o import figures, report
from d2o.datasets import read_dataset_zip
from d2o.literature import load_literature
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
results = Path(snakemake.output.pdf).parents[1]  # <results>/tables|figures/... -> <results>
p, name = snakemake.params, snakemake.wildcards.figure
stem = Path(snakemake.output.pdf).with_suffix("")
data = report.collect_slots(results, p.slots) if name not in ("fig4", "fig6") else {}
curves = lambda keys: {p.slots[k]: data[k].get("curve", []) for k in keys if k in data}  # noqa: E731

if name == "fig1":
    fig = figures.fig1(curves(["d2o", "d2o_f"]), load_literature(p.literature).figure1, p.label)
elif name == "fig2":
    student = p.slots["student"]
    pick = lambda prefix: {float(k.split("_", 1)[1]): {"fid_data": d.get("fid"), "fid_student": d.get("fid_vs", {}).get(student)}  # noqa: E731
                           for k, d in data.items() if k.startswith(prefix)}
    fig = figures.fig2(pick("teacher_"), pick("ms_"), p.label)
elif name == "fig3":
    fig = figures.fig3(curves(["d2o", "d2o_f", "cd", "cd_f"]), curves(["d2o", "d2o_f", "d2o_cd", "d2o_f_cd"]), p.label)
elif name == "thesis":
    fig = figures.thesis(curves(["pretrained", "scratch"]), p.label)
elif name == "fig4":
    z = np.load(snakemake.input[0])
    rows = {"I_t": z["I"], "O_t": z["O"], "O_t - O_t-1": z["O_diff"], "D_FFT(O_t, O_t-1)": z["D_O"],
            "O_t - I_t": z["OI_diff"], "D_FFT(O_t, I_t)": z["D_OI"]}
    rows = {k: (np.moveaxis(v, 1, -1) if v.ndim == 4 else v) for k, v in rows.items()}
    fig = figures.fig4(rows, z["sigma"], z["radial_D_O"], z["radial_D_OI"], p.label, step_sigmas=z["sigma"][z["steps_shown"]])
elif name == "fig6":
    z = np.load(snakemake.input[0])
    maps = {str(n): z[f"fmap_out_{i}"] - z[f"fmap_in_{i}"] for i, n in enumerate(z["fmap_names"])}
    fig = figures.fig6(maps, z["radial_shallow"], z["radial_deep"], z["sigma"], p.label)
elif name in ("fig5", "grids"):
    grids = {}
    for slot, exp in p.slots.items():
        dataset, model = figures.grid_slot(slot)
        images = np.load(results / "grids" / f"{exp}.npz")["images"]
        if name == "grids" and dataset not in grids:  # the real images first (as many as each model shows)
            grids[dataset] = {figures.REAL_ROW: read_dataset_zip(p.datasets[slot], max_images=len(images))[0]}
        grids.setdefault(dataset, {})[model] = images
    fig = figures.fig5(grids, p.label) if name == "fig5" else figures.grids(grids, p.label)
else:
    raise ValueError(f"unknown figure {name}")
figures.save(fig, stem)
log.info("%s -> %s.pdf/.png", name, stem)
