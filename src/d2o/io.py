"""Atomic file output: nothing half-written is ever taken as done."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time
from pathlib import Path


STALE_S = 600  # a temporary output file untouched this long belongs to a writer that was killed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The temporary file keeps the final suffix (some writers infer the format from it). Temporary files of the same
    path that a killed writer left behind (untouched for STALE_S) are removed once a write succeeds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the output the usual permissions
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > STALE_S:
                    stale.unlink()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_writable(paths) -> None:
    """Fail before any compute when an output could not be written: the nearest existing folder of each path must be
    writable (a job would otherwise fail after its work, and be retried for nothing under the SLURM profile)."""
    for p in map(Path, paths):
        folder = p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{p}: cannot be written ({folder} is not writable); fix its permissions and rerun")
