#!/usr/bin/env python3
"""Warn when layered Snakemake profiles drop each other's keys.

Snakemake merges `--profile a --profile b` per TOP-LEVEL key: b's `default-resources` replaces a's whole map.
Usage: python tools/check_profiles.py slurm ~/.config/snakemake/mycluster   (in the order you pass them)
"""
import sys
from pathlib import Path

import yaml


def load(folder):
    p = Path(folder)
    for name in ("profile.yaml", "config.yaml"):
        if (p / name).exists():
            return yaml.safe_load((p / name).read_text()) or {}
    sys.exit(f"{folder}: no profile.yaml or config.yaml")


def check(folders):
    merged, warnings = {}, []
    for folder in folders:
        prof = load(folder)
        for key, value in prof.items():
            if key in merged and isinstance(merged[key], dict) and isinstance(value, dict):
                lost = sorted(set(merged[key]) - set(value))
                if lost:
                    warnings.append(f"{folder}: '{key}' replaces the earlier one and drops {', '.join(lost)}; repeat them there")
            merged[key] = value
    return warnings


if __name__ == "__main__":
    ws = check(sys.argv[1:])
    for w in ws:
        print("WARNING:", w)
    sys.exit(1 if ws else 0)
