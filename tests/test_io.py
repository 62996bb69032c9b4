"""Atomic outputs: renamed into place only when complete, with the usual file permissions."""
import os

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
