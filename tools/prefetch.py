#!/usr/bin/env python3
"""Fetch everything a target needs from outside before anything is submitted, printing the total size first.

Usage: python tools/prefetch.py [targets...] [--dry-run] [-- extra snakemake args]   (default target: all)

Runs on the submit host (it needs internet; compute nodes need none afterwards): a dry run of the targets lists the
download jobs (checkpoints, datasets, FID/PR references, registry weights), their sizes are printed (the lock file's
record, else the server's Content-Length), then exactly those downloads run (verified, atomic, resumable). Files
already in place (e.g. copied into resources/ by hand) are not downloaded; they are verified against the registry /
lock file where they are first read (the local conversion rules, the metric jobs).
"""
import re
import subprocess
import sys

import yaml

from d2o.prefetch import DOWNLOAD_RULES, format_plan, plan


def main(argv):
    argv, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    dry = "--dry-run" in argv
    targets = [a for a in argv if a != "--dry-run"] or ["all"]
    base = ["snakemake", *targets, *extra]
    out = subprocess.run([*base, "-n", "--until", *DOWNLOAD_RULES], capture_output=True, text=True)
    if out.returncode:  # snakemake prints its error on stdout, the profile notice on stderr: show both
        sys.exit(f"prefetch.py: the dry run failed:\n{out.stdout[-3000:]}{out.stderr[-2000:]}")
    paths, rule = [], None
    for line in out.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        m = re.match(r"^\s+output: (\S+)", line)
        if m and rule in DOWNLOAD_RULES:
            paths.append(m.group(1))
    config = _config(extra)
    print(format_plan(plan(config, paths, config.get("checkpoint_lock"))), flush=True)
    if dry or not paths:
        return
    sys.exit(subprocess.run(["snakemake", *paths, *extra, "--cores", "1"]).returncode)  # the downloads themselves


def _config(extra):
    """The registry snakemake uses: the --configfile(s) of the extra args merged in order (as snakemake merges
    them), else config/config.yaml."""
    from d2o.config import deep_merge, validate

    files, i = [], 0
    while i < len(extra):
        if extra[i] in ("--configfile", "--configfiles"):
            i += 1
            while i < len(extra) and not extra[i].startswith("-"):
                files.append(extra[i])
                i += 1
        else:
            i += 1
    config = {}
    for f in files or ["config/config.yaml"]:
        with open(f) as fh:
            config = deep_merge(config, yaml.safe_load(fh) or {})
    return validate(config, " + ".join(files or ["config/config.yaml"]))


if __name__ == "__main__":
    main(sys.argv[1:])
