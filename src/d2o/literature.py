"""The D2O paper's static numbers (d2o/data/literature.yaml, shipped with the package): other papers' rows and the paper's own results.

Spec: d2o-reproduction-facts.md §10 (tables, Fig 1A points), §2 (Table 3 shares), §5 (Table 10).
`load_literature` validates every entry and raises `LiteratureError` naming the file and key of a malformed one.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path

import yaml

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "literature.yaml"
COLLAPSE = "collapse"

# Value columns of each table's literature rows (anything else in a row is descriptive).
TABLE_COLUMNS = {
    "table1": ["fid"], "table2": ["fid"], "table3": ["fid"],
    "table4": ["nfe", "fid_uncond", "is", "fid_cond"],
    "table5": ["nfe", "fid_afhqv2", "fid_ffhq"],
    "table6": ["nfe", "fid", "precision", "recall"],
    "table11": ["clip_fid", "fid", "training_images"],
    "table12": ["fid", "training_mimg", "params_m"],
}
TABLE10_KEYS = ["arch", "lr_g", "lr_d", "batch", "r1_gamma", "ema_halflife_mimg", "ema_rampup",
                "duration_mimg_d2o", "duration_mimg_d2o_f", "bf16", "dropout", "augment", "gpus"]
_ROW_KEYS = {"method", "cite", "section", "where", "note", "measure", "approx", "dataset"}
_OWN_KEYS = {"table", "slot", "metric", "value", "method", "where", "note", "measured_as", "approx", "relation"}
_BASE_KEYS = {"table", "slot", "metric", "value", "method", "cite", "where", "note"}
_POINT_KEYS = {"method", "cite", "fid", "mimg", "mimg_approx", "fid_approx", "where"}


class LiteratureError(ValueError):
    """A malformed entry in the literature file; the message names the file, the key and the fix."""


@dataclasses.dataclass(frozen=True)
class Literature:
    path: Path
    tables: dict            # name -> {"where", "caption", "rows": [row dict], "note"?}
    figure1: list           # Fig 1A literature points
    text_baselines: list    # other methods' numbers in text/captions that we re-measure
    own_results: list       # every number the paper reports for its own methods
    table10: dict           # dataset column -> hyper-parameter dict

    def rows(self, table: str) -> list[dict]:
        """Literature rows of `table` in the paper's order (each with `where` filled in)."""
        if table not in self.tables:
            raise KeyError(f"{self.path}: no table {table!r} (have {sorted(self.tables)})")
        return self.tables[table]["rows"]

    def row(self, table: str, method: str, nfe=None, dataset=None) -> dict:
        """The literature row of `method` (and `nfe` / `dataset` where the table lists several)."""
        hits = [r for r in self.rows(table) if r["method"] == method and (nfe is None or r.get("nfe") == nfe)
                and (dataset is None or r.get("dataset") == dataset)]
        if len(hits) != 1:
            raise KeyError(f"{self.path}: {len(hits)} rows of {table} match method={method!r} nfe={nfe} dataset={dataset}")
        return hits[0]

    def own(self, table: str, slot: str, metric: str) -> dict | None:
        """The own-result entry printed at (table, slot, metric), or None."""
        for e in self.own_results:
            if (e["table"], e["slot"], e["metric"]) == (table, slot, metric):
                return e
        return None

    def own_value(self, table: str, slot: str, metric: str):
        e = self.own(table, slot, metric)
        return None if e is None else e["value"]


def _fail(path, key, msg):
    raise LiteratureError(f"{path}: {key}: {msg}")


def _check_value(path, key, v, allow_str=()):
    if v is None or v in allow_str:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        _fail(path, key, f"value {v!r} must be a number, null{' or ' + repr(allow_str[0]) if allow_str else ''}; fix the entry")


def _check_keys(path, key, entry, allowed, required):
    if not isinstance(entry, dict):
        _fail(path, key, f"must be a mapping, got {type(entry).__name__}")
    missing = [k for k in required if k not in entry]
    if missing:
        _fail(path, key, f"missing required key(s) {missing}")
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        _fail(path, key, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def validate(raw: dict, path: Path | str = "<literature>") -> Literature:
    """Check the parsed YAML and return a `Literature`; raise `LiteratureError` naming the bad key."""
    path = Path(path)
    if not isinstance(raw, dict):
        _fail(path, "<root>", "must be a mapping")
    for k in ("tables", "figure1", "text_baselines", "own_results", "table10"):
        if k not in raw:
            _fail(path, k, "missing top-level section")
    tables = {}
    for name, tab in raw["tables"].items():
        key = f"tables.{name}"
        if name not in TABLE_COLUMNS:
            _fail(path, key, f"unknown table; expected one of {sorted(TABLE_COLUMNS)}")
        _check_keys(path, key, tab, {"where", "caption", "rows", "note"}, ["where", "caption", "rows"])
        cols = TABLE_COLUMNS[name]
        rows = []
        for i, row in enumerate(tab["rows"] or []):
            rkey = f"{key}.rows[{i}]"
            _check_keys(path, rkey, row, _ROW_KEYS | set(cols), ["method", "cite"])
            for c in cols:
                _check_value(path, f"{rkey}.{c}", row.get(c), (COLLAPSE,))
            if row.get("section", "scratch") not in ("scratch", "post"):
                _fail(path, f"{rkey}.section", "must be 'scratch' or 'post'")
            for c, target in (row.get("measure") or {}).items():
                if c not in cols:
                    _fail(path, f"{rkey}.measure.{c}", f"not a column of {name} ({cols})")
                if not (isinstance(target, list) and len(target) == 2 and all(isinstance(s, str) for s in target)):
                    _fail(path, f"{rkey}.measure.{c}", "must be [slot, metric]")
            rows.append({"where": tab["where"], **row})
        tables[name] = {**tab, "rows": rows}
    points = []
    for i, p in enumerate(raw["figure1"].get("points", [])):
        pkey = f"figure1.points[{i}]"
        _check_keys(path, pkey, p, _POINT_KEYS, ["method", "cite", "fid", "mimg"])
        for c in ("fid", "mimg"):
            if p[c] is None:
                _fail(path, f"{pkey}.{c}", "must be a number")
            _check_value(path, f"{pkey}.{c}", p[c])
        points.append({"where": raw["figure1"].get("where", "D2O paper Fig 1A"), "mimg_approx": False,
                       "fid_approx": False, **p})
    baselines = []
    for i, e in enumerate(raw["text_baselines"]):
        ekey = f"text_baselines[{i}]"
        _check_keys(path, ekey, e, _BASE_KEYS, ["table", "slot", "metric", "value", "method", "cite", "where"])
        _check_value(path, f"{ekey}.value", e["value"])
        baselines.append(dict(e))
    own, seen = [], set()
    for i, e in enumerate(raw["own_results"]):
        ekey = f"own_results[{i}]"
        _check_keys(path, ekey, e, _OWN_KEYS, ["table", "slot", "metric", "value", "method", "where"])
        _check_value(path, f"{ekey}.value", e["value"], (COLLAPSE,))
        k = (e["table"], e["slot"], e["metric"])
        if k in seen:
            _fail(path, ekey, f"duplicate (table, slot, metric) {k}")
        seen.add(k)
        if "measured_as" in e and not (isinstance(e["measured_as"], list) and len(e["measured_as"]) == 3):
            _fail(path, f"{ekey}.measured_as", "must be [table, slot, metric]")
        if e.get("relation", "==") not in ("==", "<="):
            _fail(path, f"{ekey}.relation", "must be '==' or '<='")
        own.append({**e, "id": "/".join(k), "measured_as": tuple(e.get("measured_as", k))})
    t10 = raw["table10"]
    _check_keys(path, "table10", t10, {"where", "columns"}, ["where", "columns"])
    for col, hp in t10["columns"].items():
        missing = [k for k in TABLE10_KEYS if k not in hp]
        if missing:
            _fail(path, f"table10.columns.{col}", f"missing hyper-parameter(s) {missing}")
    return Literature(path, tables, points, baselines, own, t10)


def load_literature(path: str | Path | None = None) -> Literature:
    """Load and validate the package's literature.yaml (or `path`)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LiteratureError(f"{path}: file not found; pass the path of a literature file (the package ships d2o/data/literature.yaml)") from None
    except yaml.YAMLError as e:
        raise LiteratureError(f"{path}: not valid YAML: {e}") from None
    return validate(raw, path)
