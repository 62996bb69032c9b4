"""What a target downloads, and how much: the plan `tools/prefetch.py` prints before fetching anything.

Every file from outside is fetched by one of four local rules on the submit host (rules/checkpoints.smk,
rules/datasets.smk, rules/weights.smk). `registry_downloads` maps each such file to its registry entry (the same
paths those rules write: tests/test_prefetch.py checks them against a dry run), `plan` adds the sizes (the lock
file's record of a pinned file, else the server's Content-Length, else unknown) and whether the file is already in
place.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path

from d2o.download import read_lock

DOWNLOAD_RULES = ("download_checkpoint", "download_dataset_source", "download_reference", "download_weight")


def registry_downloads(config: dict) -> dict[str, dict]:
    """{path: {"url", "sha256", "key", "what"}} of every file the registry downloads (paths under `paths.resources`)."""
    S = config["paths"]["resources"]
    out = {}
    for name, c in config["checkpoints"].items():
        if "url" in c:
            out[f"{S}/checkpoints/{name}.pkl"] = dict(url=c["url"], sha256=c.get("sha256", ""), key=f"checkpoint:{name}",
                                                      what=f"checkpoint {name}")
    for name, w in config.get("weights", {}).items():
        out[f"{S}/downloads/weights/{name}"] = dict(url=w["url"], sha256=w.get("sha256", ""), key=f"weights:{name}",
                                                    what=f"weights {name} ({w['kind']})")
    for ds, d in config["datasets"].items():
        src = d["source"]
        if src["kind"] == "download":
            out[f"{S}/downloads/{ds}/{src['archive']}"] = dict(url=src["url"], sha256=src.get("sha256", ""),
                                                               key=f"dataset:{ds}", what=f"dataset {ds}")
        for kind, key in (("fid-refs", "fid_ref"), ("pr-refs", "pr_ref")):
            if key in d:
                out[f"{S}/{kind}/{ds}.npz"] = dict(url=d[key]["url"], sha256=d[key].get("sha256", ""),
                                                   key=f"{kind}:{ds}", what=f"{key} {ds}")
    return out


def remote_size(url: str, timeout: float = 10.0) -> int | None:
    """The size the server announces (HEAD, Content-Length); a local file's size for file:// URLs; None if unknown."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        return path.stat().st_size if path.exists() else None
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "d2o-prefetch/1"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
    except (OSError, ValueError):
        return None


def plan(config: dict, paths, lock_file: str | os.PathLike | None = None, ask_servers: bool = True) -> list[dict]:
    """One row per download of `paths` (files a target needs): what, where, url, size (bytes or None), in_place."""
    table = registry_downloads(config)
    lock = read_lock(lock_file) if lock_file else {}
    rows = []
    for p in paths:
        entry = table.get(p)
        if entry is None:
            raise KeyError(f"{p}: no registry download writes this file (d2o.prefetch.registry_downloads)")
        size = (lock.get(entry["key"]) or {}).get("size")
        if size is None and ask_servers:
            size = remote_size(entry["url"])
        rows.append(dict(path=p, **entry, size=size, in_place=os.path.exists(p)))
    return rows


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_plan(rows: list[dict]) -> str:
    todo = [r for r in rows if not r["in_place"]]
    known = sum(r["size"] or 0 for r in todo)
    unknown = sum(r["size"] is None for r in todo)
    lines = [f"{'size':>10s}  {'file':60s}  what"]
    lines += [f"{human(r['size']):>10s}  {r['path']:60s}  {r['what']}{'  (in place: verified when used)' if r['in_place'] else ''}"
              for r in rows]
    lines.append(f"to download: {len(todo)} files, {human(known)}" + (f" + {unknown} of unknown size" if unknown else ""))
    return "\n".join(lines)
