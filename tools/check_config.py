#!/usr/bin/env python3
"""Check a registry before Snakemake reads it: YAML syntax (file, line and column), the schemas, every experiment's
settings, merged in order as `--configfile a b` merges them.

Snakemake parses --configfile itself, before the workflow's code runs, and says only "Config file is not valid JSON
or YAML" for a syntax error; this names the line.
Usage: python tools/check_config.py config/config.yaml [config/smoke.yaml ...]
"""
import sys

from d2o.config import ConfigError, experiment_settings, load_config


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    source = ", ".join(paths)
    try:
        config = load_config(*paths)
        for name in config["experiments"]:
            experiment_settings(config, name, source)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{source}: valid ({len(config['experiments'])} experiments, {len(config.get('datasets', {}))} datasets)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
