"""Verified, resumable, atomic downloads of checkpoints, reference statistics and feature-network weights.

`download(url, dest)` writes into `dest + ".part"` (resuming it with an HTTP Range request when it exists), checks the
length against the server's Content-Length, verifies SHA-256, and only then renames it onto `dest`. The expected hash
comes from `sha256=` (the config) or, when that is empty, from a lock file (YAML or JSON) that records
`{key: {sha256, size, url, date}}` on the first complete download (trust on first use) and is enforced afterwards.
A file whose hash does not match is moved aside to `dest + ".bad-<hash8>"`, never deleted.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from tqdm import tqdm

from d2o.io import atomic_write_text

__all__ = ["download", "sha256_file", "ChecksumError", "DownloadError", "read_lock", "write_lock_entry"]


class ChecksumError(RuntimeError):
    """The downloaded (or existing) file does not have the expected SHA-256."""


class DownloadError(RuntimeError):
    """The transfer failed or ended early after all retries (the partial `.part` file is kept for resuming)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in `chunk`-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_lock(lock_file: str | os.PathLike) -> dict:
    """Entries of a lock file (`{}` if it does not exist); YAML for .yaml/.yml, JSON otherwise."""
    lock_file = Path(lock_file)
    if not lock_file.exists():
        return {}
    text = lock_file.read_text()
    data = yaml.safe_load(text) if lock_file.suffix in (".yaml", ".yml") else json.loads(text or "{}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{lock_file}: lock file must hold a mapping key -> {{sha256, size, url, date}}")
    return data


def write_lock_entry(lock_file: str | os.PathLike, key: str, entry: dict) -> None:
    """Add or replace `key` in the lock file (read-modify-write, atomic rename)."""
    lock_file = Path(lock_file)
    data = read_lock(lock_file)
    data[key] = entry
    if lock_file.suffix in (".yaml", ".yml"):
        atomic_write_text(lock_file, yaml.safe_dump(data, sort_keys=True))
    else:
        atomic_write_text(lock_file, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _move_aside(path: Path, dest: Path, actual: str) -> Path:
    """Rename `path` (dest or its .part) to `dest.bad-<hash8>`: a bad file is kept for inspection, never deleted."""
    bad = dest.with_name(f"{dest.name}.bad-{actual[:8]}")
    os.replace(path, bad)
    return bad


def _mismatch(dest: Path, bad: Path, expected: str, actual: str, origin: str, lock_file, key: str) -> ChecksumError:
    fix = (f"if the new file is the right one (e.g. re-released upstream), delete the entry '{key}' from {lock_file}"
           if lock_file is not None and origin.startswith("lock") else
           "if the new file is the right one, correct sha256 for it in the config")
    return ChecksumError(f"{dest}: SHA-256 mismatch: expected {expected} ({origin}), got {actual}. The file was moved "
                         f"to {bad}. Fix: {fix} (or set sha256 in the config); otherwise delete {bad} and download "
                         "again.")


def _fetch_file_url(src: Path, part: Path, chunk: int, bar_args: dict) -> int:
    """Copy a local file (file:// URL) into `part`, continuing after the bytes already there."""
    total = src.stat().st_size
    have = part.stat().st_size if part.exists() else 0
    if have > total:
        have = 0
    with open(src, "rb") as fi, open(part, "r+b" if have else "wb") as fo, \
            tqdm(total=total, initial=have, **bar_args) as bar:
        fi.seek(have)
        fo.seek(have)
        fo.truncate()
        while block := fi.read(chunk):
            fo.write(block)
            bar.update(len(block))
    return total


def _fetch_http(url: str, part: Path, chunk: int, bar_args: dict, timeout: float) -> int | None:
    """Download `url` into `part`, resuming with a Range request; returns the full size if the server told it."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "d2o-download/1", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: either complete already, or the .part is stale
            total = int(e.headers.get("Content-Range", "*/-1").rsplit("/", 1)[-1] or -1)
            if total == have:
                return total
            part.unlink()
            return _fetch_http(url, part, chunk, bar_args, timeout)
        raise
    with resp:
        if have and resp.status == 206:
            start, _, total = resp.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
            if not start.startswith(f"{have}-"):
                raise DownloadError(f"{url}: server answered Range bytes={have}- with Content-Range "
                                    f"{resp.headers.get('Content-Range')!r}")
            total = int(total) if total.isdigit() else None
            mode = "ab"
        else:  # full body (server ignores Range, or fresh download)
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, mode) as fo, tqdm(total=total, initial=have, **bar_args) as bar:
            while block := resp.read(chunk):
                fo.write(block)
                bar.update(len(block))
    return total


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, lock_file: str | os.PathLike | None = None,
             key: str | None = None, chunk: int = 1 << 20, retries: int = 3, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Download `url` to `dest` (resumable, length- and SHA-256-verified, atomic); return `dest`.

    Expected hash: `sha256` if given, else the lock file's entry `key` (default: dest's file name). With neither, the
    first complete download (size equal to Content-Length) is recorded in `lock_file` and enforced on later calls.
    An existing `dest` is verified against the expected hash (or recorded) instead of being downloaded again.
    """
    dest = Path(dest)
    key = key or dest.name
    expected, origin = (sha256.lower(), "sha256 argument") if sha256 else (None, "")
    if expected is None and lock_file is not None:
        entry = read_lock(lock_file).get(key)
        if entry:
            expected, origin = str(entry["sha256"]).lower(), f"lock file {lock_file}, key '{key}'"

    def record(digest: str, size: int):
        if lock_file is not None and expected is None:
            write_lock_entry(lock_file, key, dict(sha256=digest, size=size, url=url,
                                                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))

    if dest.exists():
        if expected is not None:
            actual = sha256_file(dest)
            if actual != expected:
                raise _mismatch(dest, _move_aside(dest, dest, actual), expected, actual, origin, lock_file, key)
        else:  # dest only ever appears by atomic rename after a complete transfer
            record(sha256_file(dest), dest.stat().st_size)
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar_args = dict(unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr,
                    disable=not progress, dynamic_ncols=True)
    parsed = urllib.parse.urlparse(url)
    total, last_error = None, None
    for attempt in range(max(retries, 1)):
        try:
            if parsed.scheme == "file":
                total = _fetch_file_url(Path(urllib.request.url2pathname(parsed.path)), part, chunk, bar_args)
            else:
                total = _fetch_http(url, part, chunk, bar_args, timeout)
            size = part.stat().st_size
            if total is not None and size != total:
                raise DownloadError(f"{url}: got {size} of {total} bytes")
            last_error = None
            break
        except (DownloadError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last_error = e
            if isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500 and e.code != 416:
                break  # not found / forbidden: retrying cannot help
            time.sleep(min(2 ** attempt, 10) * 0.1)
    if last_error is not None:
        raise DownloadError(f"download {url} -> {dest} failed after {attempt + 1} tries: {type(last_error).__name__}: "
                            f"{last_error}. The partial file {part} is kept; run again to resume.") from last_error

    actual = sha256_file(part)
    if expected is not None and actual != expected:
        raise _mismatch(dest, _move_aside(part, dest, actual), expected, actual, origin, lock_file, key)
    if expected is None and lock_file is not None and total is None:
        print(f"d2o.download: {url} sent no Content-Length; not recording it in {lock_file} (completeness unknown). "
              f"Its SHA-256 is {actual}; set sha256 in the config.", file=sys.stderr)
    os.replace(part, dest)
    if total is not None:
        record(actual, total)
    return dest
