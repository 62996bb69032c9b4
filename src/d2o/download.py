"""Verified, resumable, atomic downloads of checkpoints, reference statistics and feature-network weights.

`download(url, dest)` writes into `dest + ".part"` (resuming it with an HTTP Range request when it exists and an
expected hash will verify the whole file), checks the length against the server's Content-Length, verifies SHA-256,
and only then renames it onto `dest`. The expected hash comes from `sha256=` (the config) or, when that is empty,
from a lock file (YAML or JSON) that records `{key: {sha256, size, url, date}}` on the first complete download
(trust on first use) and is enforced afterwards. A first download can pin nothing but a real file: no resume of an
old `.part` (its bytes could be damaged), no text/HTML answer (a login or error page), the size must equal
Content-Length, and `validate(part)` (a parse of the content: d2o.download.VALIDATORS) must pass before its hash is
recorded. Lock-file updates run under an OS file lock and rewrite the file atomically, one sorted entry per line.
A file whose hash does not match is moved aside to `dest + ".bad-<hash8>"`, never deleted.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
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

__all__ = ["download", "verify_file", "sha256_file", "ChecksumError", "DownloadError", "read_lock", "write_lock_entry"]


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


class LockFileError(ValueError):
    """A malformed lock file: the message names the file, the line and the fix."""


def read_lock(lock_file: str | os.PathLike) -> dict:
    """Entries of a lock file (`{}` if it does not exist); YAML for .yaml/.yml, JSON otherwise."""
    lock_file = Path(lock_file)
    if not lock_file.exists():
        return {}
    text = lock_file.read_text()
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith(("<<<<<<<", "=======", ">>>>>>>")):
            raise LockFileError(f"{lock_file}:{i}: a merge-conflict marker ({line[:7]}); keep one line per key (both "
                                f"sides' keys if they differ) and delete the markers")
    try:
        data = yaml.safe_load(text) if lock_file.suffix in (".yaml", ".yml") else json.loads(text or "{}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise LockFileError(f"{lock_file}{where}: not valid YAML ({getattr(e, 'problem', e)}); fix that line or delete "
                            f"the file (its hashes are then recorded again on the next downloads)") from None
    except json.JSONDecodeError as e:
        raise LockFileError(f"{lock_file}:{e.lineno}: not valid JSON ({e.msg}); fix that line or delete the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "sha256" in v for v in data.values()):
        raise LockFileError(f"{lock_file}: a lock file maps each key to {{sha256, size, url, date}}; fix or delete it")
    return data


@contextlib.contextmanager
def _locked(lock_file: Path):
    """An exclusive OS lock beside the lock file (parallel first downloads would otherwise lose entries)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file.with_name(f".{lock_file.name}.flock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def write_lock_entry(lock_file: str | os.PathLike, key: str, entry: dict) -> None:
    """Add or replace `key` in the lock file: under an OS lock, rewritten atomically, one sorted entry per line
    (merge-friendly: two branches that pinned different files conflict only on their own lines)."""
    lock_file = Path(lock_file)
    with _locked(lock_file):
        data = read_lock(lock_file)
        data[key] = entry
        if lock_file.suffix in (".yaml", ".yml"):
            lines = [yaml.safe_dump({k: data[k]}, default_flow_style=None, width=10**6, sort_keys=True).strip()
                     for k in sorted(data)]
            text = "# SHA-256 of first downloads (d2o.download); commit it to pin them. One entry per line.\n"
            atomic_write_text(lock_file, text + "\n".join(lines) + "\n")
        else:
            atomic_write_text(lock_file, "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(data[k], sort_keys=True)}"
                                                           for k in sorted(data)) + "\n}\n")


def _check_pickle(path: Path) -> None:
    from d2o.edm.persistence import read_pickle_records

    read_pickle_records(path)  # the allow-list unpickler: garbage, HTML or code is refused, nothing runs


def _check_npz(path: Path) -> None:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        if not z.files:
            raise ValueError(f"{path}: an npz without arrays")
        for name in z.files:
            z[name].shape  # noqa: B018 - reads every member's header and data


def _check_tar(path: Path) -> None:
    import tarfile

    with tarfile.open(path) as tar:
        if not tar.getmembers():
            raise ValueError(f"{path}: an empty archive")


# content checks of a first download, by the registry's file kind (before its hash is recorded)
def _check_class_embedding(path: Path) -> None:
    from d2o.class_embedding import read_class_embedding_pickle

    read_class_embedding_pickle(path)


def _check_weight(kind: str, path: Path) -> None:
    from d2o.weights import read_upstream

    read_upstream(kind, path)  # a state dict of tensors (weights_only) or a TorchScript archive's, nothing run


VALIDATORS = {"pickle": _check_pickle, "npz": _check_npz, "tar": _check_tar, "class-embedding": _check_class_embedding,
              **{kind: functools.partial(_check_weight, kind)
                 for kind in ("torchvision", "timm", "torch-fidelity-inception", "clip-torchscript")}}


class _TextResponse(DownloadError):
    """The server answered with text (an error or login page), not the file."""


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
        ctype = resp.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() in ("text/html", "text/plain", "application/xhtml+xml"):
            raise _TextResponse(f"{url}: the server answered {resp.status} with {ctype}, not the file (an error or "
                                f"login page?); check the url in the registry")
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
             timeout: float = 20.0, validate=None) -> Path:
    """Download `url` to `dest` (length- and SHA-256-verified, atomic); return `dest`.

    Expected hash: `sha256` if given, else the lock file's entry `key` (default: dest's file name). With neither, the
    first complete download (size equal to Content-Length, `validate(path)` passing: e.g. VALIDATORS["pickle"]) is
    recorded in `lock_file` and enforced on later calls; such a download never resumes a `.part`, since nothing
    could tell damaged bytes in it. An existing `dest` is verified against the expected hash (or recorded) instead of
    being downloaded again. `timeout` bounds each connection and read (a server that never answers fails in
    seconds); each failed try is one line on stderr; the final error is one line naming the file and the fix.
    """
    dest = Path(dest)
    key = key or dest.name
    expected, origin = _expected(sha256, lock_file, key)
    if dest.exists():  # a pre-staged or earlier file: verified, or checked like a first download and pinned
        return verify_file(dest, sha256, lock_file, key, validate, url)

    def record(digest: str, size: int):
        if lock_file is not None and expected is None:
            _pin(lock_file, key, digest, size, url)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar_args = dict(unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr,
                    disable=not progress, dynamic_ncols=True)
    parsed = urllib.parse.urlparse(url)
    total, last_error = None, None
    for attempt in range(max(retries, 1)):
        if expected is None and part.exists():  # nothing can verify old bytes: start over
            part.unlink()
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
            reason = getattr(e, "reason", None) or e
            print(f"d2o.download: {dest.name}: try {attempt + 1} of {max(retries, 1)} failed: {reason}", file=sys.stderr)
            if isinstance(e, _TextResponse) or (isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500 and e.code != 416):
                break  # an error page, not found, forbidden: retrying cannot help
            time.sleep(min(2 ** attempt, 10) * 0.1)
    if last_error is not None:
        if expected is None:
            part.unlink(missing_ok=True)
        kept = f" The partial file {part} is kept; run again to resume." if part.exists() else ""
        raise DownloadError(f"download {url} -> {dest} failed after {attempt + 1} tries: "
                            f"{getattr(last_error, 'reason', None) or last_error}.{kept} Offline? Copy the file to "
                            f"{dest} (it is verified before use).") from None

    actual = sha256_file(part)
    if expected is not None and actual != expected:
        raise _mismatch(dest, _move_aside(part, dest, actual), expected, actual, origin, lock_file, key)
    if expected is None:
        _validated(part, dest, validate)
    if expected is None and lock_file is not None and total is None:
        print(f"d2o.download: {url} sent no Content-Length; not recording it in {lock_file} (completeness unknown). "
              f"Its SHA-256 is {actual}; set sha256 in the config.", file=sys.stderr)
    os.replace(part, dest)
    if total is not None:
        record(actual, total)
    return dest


def _expected(sha256: str | None, lock_file, key: str) -> tuple[str | None, str]:
    """The hash a file must have and where that comes from: the registry's, else the lock file's entry, else none."""
    if sha256:
        return sha256.lower(), "sha256 in the registry"
    entry = read_lock(lock_file).get(key) if lock_file is not None else None
    if entry:
        return str(entry["sha256"]).lower(), f"lock file {lock_file}, key '{key}'"
    return None, ""


def _pin(lock_file, key: str, digest: str, size: int, url: str | None) -> None:
    write_lock_entry(lock_file, key, dict(sha256=digest, size=size, url=url,
                                          date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))


def verify_file(path: str | os.PathLike, sha256: str | None = None, lock_file: str | os.PathLike | None = None,
                key: str | None = None, validate=None, url: str | None = None) -> Path:
    """Check a file from outside where it is consumed (downloaded here or copied into place by hand): its SHA-256
    against the registry's or the lock file's; with neither, its content (`validate`) before its hash is pinned in
    the lock file. A mismatch moves the file aside and names it, the expected hash and the fix."""
    path = Path(path)
    key = key or path.name
    expected, origin = _expected(sha256, lock_file, key)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    actual = sha256_file(path)
    if expected is not None:
        if actual != expected:
            raise _mismatch(path, _move_aside(path, path, actual), expected, actual, origin, lock_file, key)
        return path
    _validated(path, path, validate)
    if lock_file is not None:
        _pin(lock_file, key, actual, path.stat().st_size, url)
    return path


def _validated(path: Path, dest: Path, validate) -> None:
    """Run the content check of a file whose hash nothing pins yet; a failure moves it aside (never pinned)."""
    if validate is None:
        return
    try:
        validate(path)
    except Exception as e:  # noqa: BLE001 - any parse failure means: not the file
        bad = _move_aside(path, dest, sha256_file(path))
        raise DownloadError(f"{dest}: the file is not what the registry names ({type(e).__name__}: {e}); moved to "
                            f"{bad}, its hash not recorded. Check the url, or copy the right file to {dest}") from None
