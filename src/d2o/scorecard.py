"""Reproduction scorecard: every number the D2O paper reports for its own methods, beside the reproduced value.

Rows come from d2o/data/literature.yaml `own_results` (kind "own"); with a `Literature` object the EDM/baseline
numbers we re-measure (table cells with `measure`, `text_baselines`) follow as kind "baseline".
`computed` maps (table, slot, metric) -> (value, experiment[, made_by[, best]]); an own entry is looked up by its
`measured_as` key. `made_by` ("<model identity> @ <git commit>", d2o.report) ties each number to the model and code
that made it; `best` is the value of the run's lowest-FID snapshot ("<value> @ <Mimg> Mimg": the checkpoint the
authors reported), shown beside the final model's, which the status judges.
Status: "reproduced" (|delta| <= max(abs_tol, rel_tol * |paper|); for "<=" entries: value <= bound + tol),
"differs", "not run", or "demo (not comparable)" when the label is not the paper protocol.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tabulate import tabulate

from d2o.io import atomic_write_text
from d2o.literature import COLLAPSE, Literature

PAPER_LABEL = "paper protocol"
FIELDS = ["id", "kind", "where", "method", "metric", "paper", "reproduced", "delta", "status", "best_snapshot",
          "experiment", "made_by"]


def entries(literature_own) -> list[dict]:
    """Scorecard rows to fill: own results, then (for a Literature) re-measured baseline numbers."""
    if not isinstance(literature_own, Literature):
        return [{"kind": "own", "key": tuple(e.get("measured_as") or (e["table"], e["slot"], e["metric"])),
                 "id": e.get("id", f"{e['table']}/{e['slot']}/{e['metric']}"), **e} for e in literature_own]
    out = [{"kind": "own", "key": tuple(e["measured_as"]), **e} for e in literature_own.own_results]
    for table, tab in literature_own.tables.items():
        for r in tab["rows"]:
            for col, (slot, metric) in (r.get("measure") or {}).items():
                if r.get(col) is None:
                    continue
                method = f"{r['method']} ({r['dataset']})" if r.get("dataset") else r["method"]
                out.append({"kind": "baseline", "key": (table, slot, metric), "id": f"{table}/{slot}/{metric}",
                            "table": table, "slot": slot, "metric": metric, "value": r[col],
                            "method": f"{method}, {col}", "where": r["where"]})
    for e in literature_own.text_baselines:
        out.append({"kind": "baseline", "key": (e["table"], e["slot"], e["metric"]),
                    "id": f"{e['table']}/{e['slot']}/{e['metric']}", **e})
    return out


def _status(paper, value, relation, label, rel_tol, abs_tol, collapse_fid):
    """(status, delta) of one reproduced value against the paper's."""
    if value is None:
        return "not run", None
    collapsed = value == COLLAPSE or (isinstance(value, (int, float)) and value >= collapse_fid)
    delta = None if COLLAPSE in (paper, value) else value - paper
    if label != PAPER_LABEL:
        return "demo (not comparable)", delta
    if paper == COLLAPSE:
        return ("reproduced" if collapsed else "differs"), None
    if value == COLLAPSE:
        return "differs", None
    tol = max(abs_tol, rel_tol * abs(paper))
    ok = value <= paper + tol if relation == "<=" else abs(delta) <= tol
    return ("reproduced" if ok else "differs"), delta


def rows(literature_own, computed: dict, label: str, rel_tol: float = 0.05, abs_tol: float = 0.02,
         collapse_fid: float = 50.0) -> list[dict]:
    """One dict per paper number with the fields of FIELDS."""
    out = []
    for e in entries(literature_own):
        value, experiment, *extra = computed.get(e["key"], (None, None))
        made_by, best = (list(extra) + ["", ""])[:2]
        status, delta = _status(e["value"], value, e.get("relation", "=="), label, rel_tol, abs_tol, collapse_fid)
        paper = e["value"] if e["value"] == COLLAPSE else f"{'<= ' if e.get('relation') == '<=' else ''}{'~' if e.get('approx') else ''}{e['value']:g}"
        out.append({"id": e["id"], "kind": e["kind"], "where": e["where"], "method": e["method"], "metric": e["metric"],
                    "paper": paper, "reproduced": "not run" if value is None else (value if isinstance(value, str) else f"{value:.4g}"),
                    "delta": "" if delta is None else f"{delta:+.3g}", "status": status, "experiment": experiment or "",
                    "best_snapshot": best or "", "made_by": made_by or ""})
    return out


def build(literature_own, computed: dict, label: str, rel_tol: float = 0.05, abs_tol: float = 0.02,
          collapse_fid: float = 50.0) -> tuple[str, str]:
    """Scorecard -> (markdown, csv). `literature_own`: a Literature, or its `own_results` list."""
    rs = rows(literature_own, computed, label, rel_tol, abs_tol, collapse_fid)
    counts = {}
    for r in rs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    n_own = sum(r["kind"] == "own" for r in rs)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    md = (f"# D2O reproduction scorecard [{label}]\n\n"
          f"Label: {label}. {n_own} numbers reported by the paper for its own methods"
          f"{f', {len(rs) - n_own} re-measured baseline numbers' if len(rs) > n_own else ''}. {summary}.\n"
          f"Tolerance: |delta| <= max({abs_tol:g}, {rel_tol:g} x |paper|); FID >= {collapse_fid:g} counts as collapse.\n\n"
          + tabulate([[r[f] for f in FIELDS] for r in rs], headers=FIELDS, tablefmt="github", disable_numparse=True) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS + ["label"], lineterminator="\n")
    w.writeheader()
    for r in rs:
        w.writerow({**r, "label": label})
    return md, buf.getvalue()


def write(literature_own, computed: dict, label: str, md_path: str | Path, csv_path: str | Path, **tol) -> None:
    """build() and write both files atomically."""
    md, text = build(literature_own, computed, label, **tol)
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, text)
