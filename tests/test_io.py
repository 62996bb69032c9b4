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


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    """A SIGKILL mid-write leaves `.<name>.<random><suffix>`; the next successful write of that path removes it once
    it is older than STALE_S (a younger one may belong to a writer still running)."""
    from d2o import io

    old, young = tmp_path / ".out.json.abc123.json", tmp_path / ".out.json.def456.json"
    for p in (old, young):
        p.write_text("{half")
    os.utime(old, (0, 0))
    io.atomic_write_text(tmp_path / "out.json", "{}")
    assert not old.exists() and young.exists() and (tmp_path / "out.json").read_text() == "{}"
