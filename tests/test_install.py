"""The package installs non-editable (a wheel) and finds its schemas and literature data inside itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_validates_a_registry(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:  # a copy of the checkout: the build writes its egg-info and build/ folders there
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((REPO / f).read_bytes())
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (target / "d2o" / "__init__.py").is_symlink() and (target / "d2o" / "data" / "literature.yaml").is_file()
    script = ("import d2o.config, d2o.literature; "
              f"c = d2o.config.load_config({str(REPO / 'config' / 'demo.yaml')!r}); "
              "e = d2o.config.experiment_settings(c, 'demo-d2o'); lit = d2o.literature.load_literature(); "
              "print(d2o.config.__file__, e.training.lr_g, len(lit.tables))")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-3000:]
    path, lr, n = run.stdout.split()
    assert path.startswith(str(target)) and float(lr) > 0 and int(n) > 0
