"""Atomic outputs: renamed into place only when complete, with the usual file permissions."""
import os
from pathlib import Path

import pytest

from d2o.io import atomic_path, atomic_write_text


def test_atomic_outputs_get_normal_permissions(tmp_path):
    atomic_write_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "y.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    """check_writable (every workflow script and train.py at start): the nearest existing folder of each output must be
    writable; os.access is emulated (as root every folder is writable)."""
    from d2o.io import check_writable

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real(p, mode))
    check_writable([tmp_path / "a/b/c.json"])                                  # created later under a writable one
    with pytest.raises(PermissionError, match=r"locked/x/out.json: cannot be written \(.*locked is not writable\)"):
        check_writable([tmp_path / "ok.json", locked / "x/out.json"])
