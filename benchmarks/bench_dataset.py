#!/usr/bin/env python3
"""Training-data loading: the whole zip decoded into RAM per process (the authors' way) vs the memory-mapped
decode-once cache (d2o.datasets.cached_image_array). Each mode runs in a fresh process; prints wall time, peak RSS
(VmHWM) and the anonymous (per-process, unshareable) and file-backed (page cache, shared by every process of a
node) resident memory after loading.

    python benchmarks/bench_dataset.py --n 20000 --res 64
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _status() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "RssAnon", "RssFile"):
            fields[k] = int(v.split()[0]) / 1024  # MiB
    return fields


def child(mode: str, zip_path: str, cache: str) -> None:
    import torch

    from d2o.datasets import cached_image_array, read_dataset_zip

    base = _status()
    t0 = time.time()
    if mode == "in_ram":  # what every rank did before: decode into RAM, then an NCHW copy
        images, _ = read_dataset_zip(zip_path)
        data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        del images
    else:
        data, _ = cached_image_array(zip_path, cache)
    checksum = int(np.asarray(data[::97]).astype(np.int64).sum())  # touch a sample of the images
    dt = time.time() - t0
    end = _status()
    print(json.dumps({"mode": mode, "seconds": round(dt, 2), "checksum": checksum,
                      "peak_rss_mib": round(end["VmHWM"] - base["VmHWM"], 1),
                      "anon_mib": round(end["RssAnon"] - base["RssAnon"], 1),
                      "file_backed_mib": round(end["RssFile"] - base["RssFile"], 1)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "ZIP", "CACHE"))
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    from d2o.datasets import write_dataset_zip

    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    zip_path = tmp / "data.zip"
    write_dataset_zip(zip_path, (rng.integers(0, 256, (args.res, args.res, 3), dtype=np.uint8) for _ in range(args.n)),
                      total=args.n)
    print(f"{args.n} images {args.res}x{args.res}: {args.n * args.res * args.res * 3 / 2**20:.0f} MiB of pixels")
    for mode in ("in_ram", "cache_build", "cache_open"):
        subprocess.run([sys.executable, __file__, "--child", mode, str(zip_path), str(tmp / "cache")], check=True)


if __name__ == "__main__":
    main()
