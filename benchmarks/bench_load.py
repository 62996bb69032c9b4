"""Load time and peak memory of an ADM-sized EDM pickle: d2o's safe loader vs torch.load of the same tensors.

Makes (once, in --workdir) an EDM-format training snapshot of EDM's ImageNet-64 network (EDMPrecond + DhariwalUNet,
model_channels 192, channel_mult [1,2,3,4], label_dim 1000: 295.9M parameters, ~1.18 GB fp32) with random weights,
written by tests/helpers_edm_pickle.py, plus `torch.save(state_dict)` and the project's .safetensors of the same
weights. Each method then runs in a fresh subprocess, which reports its wall time and the growth of its peak RSS
(`resource.getrusage(...).ru_maxrss` after the load minus before it; imports and setup excluded). The
"2nd load" row excludes torch's one-time meta-device initialisation (~1 s: the first arithmetic op on a meta tensor
imports torch's Python meta kernels), which the loader pays once per process to build large networks without
allocating their random init.

    /work/venv/bin/python benchmarks/bench_load.py [--workdir /tmp/d2o_bench_load] [--repeats 2]

Targets (task brief): load_edm_pickle <= 1.5x torch.load in time and in peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ADM_IMAGENET = dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet", model_channels=192,
                    channel_mult=[1, 2, 3, 4], dropout=0.10)

METHODS = {  # name -> (untimed setup, timed statement)
    "torch.load(state_dict .pt, weights_only)": ("import torch", "x = torch.load(PT, weights_only=True)"),
    "torch.load + EDMPrecond.load_state_dict": (
        "import torch; from d2o.edm import model_io",
        "sd = torch.load(PT, weights_only=True); net = model_io.build('EDMPrecond', **KW); net.load_state_dict(sd); del sd"),
    "d2o load_edm_pickle (safe)": ("from d2o.edm.persistence import load_edm_pickle", "x = load_edm_pickle(PKL)"),
    "d2o load_edm_pickle, 2nd load in process": ("from d2o.edm.persistence import load_edm_pickle; "
                                                 "x = load_edm_pickle(PKL); del x", "x = load_edm_pickle(PKL)"),
    "d2o model_io.load_model (.safetensors)": ("from d2o.edm import model_io", "x = model_io.load_model(ST)"),
}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, workdir: Path) -> None:
    """Run one method in this (fresh) process and print a JSON line with seconds and peak-RSS growth."""
    import torch  # noqa: F401  (imports excluded from the measurement)
    import d2o.edm.model_io  # noqa: F401
    import d2o.edm.persistence  # noqa: F401
    env = dict(PT=str(workdir / "adm.pt"), PKL=str(workdir / "adm.pkl"), ST=str(workdir / "adm.safetensors"),
               KW=ADM_IMAGENET)
    setup, stmt = METHODS[method]
    exec(setup, env)
    before = _maxrss_mb()
    t0 = time.perf_counter()
    exec(stmt, env)
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(seconds=seconds, peak_mb=_maxrss_mb() - before, base_mb=before)))


def make_files(workdir: Path) -> None:
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers_edm_pickle import write_edm_pickle

    from d2o.edm import model_io
    workdir.mkdir(parents=True, exist_ok=True)
    if all((workdir / n).exists() for n in ("adm.pkl", "adm.pt", "adm.safetensors")):
        return
    torch.manual_seed(0)
    net = model_io.build("EDMPrecond", **ADM_IMAGENET).eval().requires_grad_(False)
    n = sum(p.numel() for p in net.parameters())
    print(f"ADM ImageNet-64 EDMPrecond: {n / 1e6:.1f}M parameters", flush=True)
    sd = net.state_dict()
    write_edm_pickle(workdir / "adm.pkl", "EDMPrecond", ADM_IMAGENET, sd, module=net)
    torch.save(sd, workdir / "adm.pt")
    model_io.save_model(net, workdir / "adm.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/d2o_bench_load"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child, args.workdir)
    if args.make:
        return make_files(args.workdir)
    # Linux keeps ru_maxrss across execve: make the files in a child, or every measurement child would start
    # with this process's peak and report no growth.
    subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--make"], check=True)
    sizes = {n: (args.workdir / n).stat().st_size / 1e9 for n in ("adm.pkl", "adm.pt", "adm.safetensors")}
    print("file sizes (GB): " + ", ".join(f"{k} {v:.3f}" for k, v in sizes.items()))
    rows = []
    for method in METHODS:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--child", method],
                                 check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        rows.append((method, min(r["seconds"] for r in runs), max(r["peak_mb"] for r in runs)))
    base_s, base_mb = rows[0][1], rows[0][2]
    print(f"\n{'method':44s} {'time s (best)':>13s} {'x':>6s} {'peak RSS +MB':>13s} {'x':>6s}")
    for method, s, mb in rows:
        print(f"{method:44s} {s:13.2f} {s / base_s:6.2f} {mb:13.0f} {mb / base_mb:6.2f}")


if __name__ == "__main__":
    main()
