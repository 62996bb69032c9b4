"""d2o.workflow: the glue of the workflow scripts."""
import os
import subprocess
import sys

import pytest


def _python(code):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.parametrize("torch_first", [False, True])
def test_limit_threads_holds_whether_torch_is_loaded_before_or_after(torch_first):
    """A job's thread count (its rule's `threads`, 1 for the bitwise-reproducible demo jobs) reaches torch either way;
    the scripts that never need torch (settings, tables, the scorecard) do not load it."""
    code = ("import sys\n" + ("import torch\ntorch.set_num_threads(2)\n" if torch_first else "")
            + "from d2o.workflow import limit_threads\nimport d2o.io, d2o.report, d2o.tables, d2o.scorecard\n"
            "print('torch' in sys.modules)\nlimit_threads(1)\nimport torch\nprint(torch.get_num_threads())\n")
    loaded, threads = _python(code)
    assert loaded == str(torch_first) and threads == "1"
