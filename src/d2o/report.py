"""Collect the DAG's artefacts of one experiment into the data dicts that d2o.tables / figures / scorecard render.

Per experiment the DAG writes <results>/<experiment>/metrics/<metric>.json, train.json (training runs) and
fid-curve.json (runs with snapshot metrics). Nothing here computes a number: it only reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

METRIC_KEYS = {"fid": "fid", "fid_dataset": "fid_dataset", "is": "is", "clip_fid": "clip_fid"}


def _read(path: Path):
    with open(path) as f:
        return json.load(f)


def collect(results: str | Path, name: str, collapse_fid: float = 50.0) -> dict:
    """{experiment, fid, fid_dataset, is, precision, recall, clip_fid, training_mimg, params_m, shares, collapsed,
    curve, label, made_by, best} for one experiment; `best` holds the same keys for the run's lowest-FID snapshot (keys present only where the DAG produced them)."""
    root = Path(results) / name
    out: dict = {"experiment": name, **_metrics(root)}
    for p in sorted((root / "metrics").glob("fid-vs-*.json")) if (root / "metrics").exists() else []:
        r = _read(p)
        out.setdefault("fid_vs", {})[r["other"]] = r["value"]
    t = root / "train.json"
    if t.exists():
        r = _read(t)
        out.update(training_mimg=r["training_mimg"], params_m=r["params_m"], shares=r["shares"],
                   trainable_percent=r["shares"]["trainable_percent"])
    c = root / "fid-curve.json"
    if c.exists():
        out["curve"] = [tuple(p) for p in _read(c)["points"]]
    if out.get("fid") is not None:
        out["collapsed"] = bool(out["fid"] >= collapse_fid)
    b = root / "best" / "snapshot.json"
    if b.exists():  # the lowest-FID snapshot, evaluated like the final model
        choice = _read(b)
        best = {"experiment": name, **_metrics(root / "best"), "training_mimg": choice["mimg"],
                "snapshot_fid": choice["snapshot_fid"], "params_m": out.get("params_m"), "shares": out.get("shares"),
                "trainable_percent": out.get("trainable_percent")}
        if best.get("fid") is not None:
            best["collapsed"] = bool(best["fid"] >= collapse_fid)
        out["best"] = best
    return out


def best_snapshot(curve: dict, snapshots_dir: str | Path) -> dict:
    """The lowest-FID point of a run's FID curve (the earliest of equal ones) and its snapshot file: the checkpoint
    the authors released and reported ("checkpoints are with lowest FID", their README)."""
    points = curve.get("points") or []
    if not points:
        raise ValueError(f"{curve.get('experiment')}: the FID curve has no points; nothing to choose from")
    mimg, fid = min(points, key=lambda p: (p[1], p[0]))
    kimg = round(mimg * 1000)
    path = Path(snapshots_dir) / f"snapshot-{kimg:06d}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the best snapshot of the FID curve is missing; rebuild {snapshots_dir}")
    return {"kimg": kimg, "mimg": mimg, "snapshot_fid": fid, "path": str(path),
            "final_mimg": max(p[0] for p in points), "label": curve.get("label")}


def _metrics(root: Path) -> dict:
    """Metric values of one evaluated model (<experiment>/ or <experiment>/best/)."""
    out: dict = {}
    for metric, key in METRIC_KEYS.items():
        p = root / "metrics" / f"{metric}.json"
        if p.exists():
            r = _read(p)
            out[key] = r["value"]
            out["label"] = r.get("label")
            out.setdefault("made_by", made_by(r))
    pr = root / "metrics" / "pr.json"
    if pr.exists():
        v = _read(pr)["value"]
        out.update(precision=v["precision"], recall=v["recall"])
    return out


def made_by(record: dict) -> str:
    """"<model identity> @ <git commit>[+dirty]" of a metric record (d2o.workflow.result_record); "" if unknown."""
    code = (record.get("provenance") or {}).get("code") or {}
    commit = (code.get("commit") or "unknown")[:10] + ("+dirty" if code.get("dirty") else "")
    return f"{record.get('model_identity') or 'unknown'} @ {commit}" if record.get("provenance") else ""


def collect_slots(results: str | Path, slots: dict, collapse_fid: float = 50.0) -> dict:
    """slot -> collected data, for the slots of one table or figure."""
    return {slot: collect(results, name, collapse_fid) for slot, name in slots.items()}


def curve_at(curve, mimg: float, tol: float = 1e-6):
    for x, y in curve or []:
        if abs(x - mimg) <= tol:
            return y
    return None


def scorecard_values(results: str | Path, tables: dict, collapse_fid: float = 50.0) -> dict:
    """(table, slot, metric) -> (value, experiment, made_by, best snapshot's value) for every table cell the registry computes, plus the text
    values that are read off training curves (FID after 0.2 Mimg)."""
    computed = {}
    for table, slots in tables.items():
        for slot, data in collect_slots(results, slots, collapse_fid).items():
            for metric in ("fid", "fid_dataset", "is", "precision", "recall", "clip_fid"):
                if data.get(metric) is not None:
                    value = "collapse" if metric == "fid" and data.get("collapsed") else data[metric]
                    b = data.get("best") or {}
                    best = f"{b[metric]:.4g} @ {b['training_mimg']:.3g} Mimg" if b.get(metric) is not None else ""
                    computed[(table, slot, metric)] = (value, data["experiment"], data.get("made_by", ""), best)
            if table == "table4" and slot in ("d2o_uncond", "d2o_f_uncond"):
                v = curve_at(data.get("curve"), 0.2)
                if v is not None:
                    computed[("text", f"{slot}_0.2mimg", "fid")] = (v, data["experiment"], data.get("made_by", ""))
    return computed
