"""Feature-extraction throughput (images/s) of d2o.metrics extractors on this machine, printed as a table.

    python benchmarks/bench_metrics.py [--n 64] [--res 32] [--batch 32] [--device cpu]

Inception and CLIP run with random weights written to a temporary folder (same compute as the real ones;
no download). Reported numbers are for the feature pass only, not the extractor construction.
"""

import argparse
import importlib.util
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from d2o import metrics as M

_spec = importlib.util.spec_from_file_location(
    "helpers_fidelity", Path(__file__).resolve().parents[1] / "tests" / "helpers_fidelity.py")
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def bench(dataset, extractor, layer, weights, batch, device):
    M.extract_features(torch.utils.data.Subset(dataset, range(2)), extractor, [layer], weights, 2, device)  # warm-up
    t0 = time.perf_counter()
    M.extract_features(dataset, extractor, [layer], weights, batch, device)
    return len(dataset) / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    rng = np.random.RandomState(0)
    ds = M.UInt8ImageDataset(rng.randint(0, 256, (a.n, a.res, a.res, 3)).astype(np.uint8))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(M.DEMO_EXTRACTOR, "feat", None, ds),
                 ("inception-v3-compat", "2048", helpers.make_random_inception_weights(tmp), ds),
                 ("clip-vit-b-32 (tiny random, clean-fid resize)", "clip", helpers.make_tiny_clip(tmp),
                  M.CleanFIDClipResize(ds))]
        for name, layer, weights, data in cases:
            ips = bench(data, name.split(" ")[0], layer, weights, a.batch, a.device)
            rows.append([name, layer, a.res, a.n, a.batch, a.device, torch.get_num_threads(), f"{ips:.1f}"])
    print(tabulate(rows, headers=["extractor", "layer", "res", "images", "batch", "device", "threads", "img/s"]))


if __name__ == "__main__":
    main()
