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
    curve, label, made_by} for one experiment (keys present only where the DAG produced them)."""
    root = Path(results) / name
    out: dict = {"experiment": name}
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
    """(table, slot, metric) -> (value, experiment, made_by) for every table cell the registry computes, plus the text
    values that are read off training curves (FID after 0.2 Mimg)."""
    computed = {}
    for table, slots in tables.items():
        for slot, data in collect_slots(results, slots, collapse_fid).items():
            for metric in ("fid", "fid_dataset", "is", "precision", "recall", "clip_fid"):
                if data.get(metric) is not None:
                    value = "collapse" if metric == "fid" and data.get("collapsed") else data[metric]
                    computed[(table, slot, metric)] = (value, data["experiment"], data.get("made_by", ""))
            if table == "table4" and slot in ("d2o_uncond", "d2o_f_uncond"):
                v = curve_at(data.get("curve"), 0.2)
                if v is not None:
                    computed[("text", f"{slot}_0.2mimg", "fid")] = (v, data["experiment"], data.get("made_by", ""))
    return computed
