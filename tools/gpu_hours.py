#!/usr/bin/env python3
"""GPU-hours a target will request, read from a Snakemake dry run (`gpu` x `runtime` of every job to run).

Usage: python tools/gpu_hours.py [targets...] [-- extra snakemake args]   (default target: all)
The runtime is what SLURM is asked for on the first attempt (the expected hours from the registry).
"""
import collections
import re
import subprocess
import sys


def main(argv):
    targets, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    cmd = ["snakemake", *(targets or ["all"]), "-n", "--profile", "slurm", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:  # snakemake prints its error on stdout, the profile notice on stderr: show both
        sys.exit(f"gpu_hours.py: the dry run failed:\n{out.stdout[-3000:]}{out.stderr[-2000:]}")
    per_rule = collections.defaultdict(lambda: [0, 0.0])
    rule = None
    for line in out.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        m = re.search(r"resources: (.*)", line)
        if m and rule:
            res = dict(kv.split("=", 1) for kv in re.findall(r"(\w+=[^,]+)", m.group(1)))
            gpus, minutes = int(res.get("gpu", 0)), float(res.get("runtime", 0))
            per_rule[rule][0] += 1
            per_rule[rule][1] += gpus * minutes / 60
    total = sum(v[1] for v in per_rule.values())
    print(f"{'rule':24s} {'jobs':>6s} {'GPU-hours':>10s}")
    for r, (n, h) in sorted(per_rule.items(), key=lambda kv: -kv[1][1]):
        print(f"{r:24s} {n:6d} {h:10.1f}")
    print(f"{'total':24s} {sum(v[0] for v in per_rule.values()):6d} {total:10.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
