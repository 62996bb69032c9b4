"""The config registry: loading, JSON-schema validation and experiment resolution.

A registry file (config/config.yaml for the paper, config/demo.yaml for the offline demo) declares datasets,
checkpoints, experiments and which experiments each table and figure needs. An experiment resolves as
`defaults` <- `dataset_defaults[dataset]` <- its `extends` chain <- its own keys (deep merge), and the result is
validated against config/experiment.schema.yaml. Every error is one line naming the file, the key and the fix.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import jsonschema
import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
REGISTRY_SCHEMA = CONFIG_DIR / "schema.yaml"
EXPERIMENT_SCHEMA = CONFIG_DIR / "experiment.schema.yaml"


class ConfigError(ValueError):
    """A malformed registry: the message names the file, the key and the valid choices."""


def _load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _extend_with_defaults(validator_class):
    """A validator that fills `default:` values (as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError, prefix: str) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in error.absolute_path]
    return ".".join(parts) or "<top level>"


def _check(instance: dict, schema_path: Path, source: str, prefix: str = "") -> None:
    schema = _load_yaml(schema_path)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        e = errors[0]
        hint = ""
        if e.validator == "additionalProperties":
            allowed = list(e.schema.get("properties", {}))
            hint = f"; valid keys: {', '.join(allowed)}"
        elif e.validator == "enum":
            hint = f"; valid choices: {', '.join(map(str, e.validator_value))}"
        raise ConfigError(f"{source}: {_key_path(e, prefix)}: {e.message}{hint} (schema {schema_path.name})")


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def unknown_name_error(kind: str, name: str, choices, source: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(choices), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"{source}: unknown {kind} '{name}'{hint}; valid choices: {', '.join(sorted(choices))}")


def validate(config: dict, source: str = "config") -> dict:
    """Validate a registry in place (schema defaults filled) and every experiment it declares; returns it."""
    _check(config, REGISTRY_SCHEMA, source)
    for name in config["experiments"]:
        resolve_experiment(config, name, source)
    for section in ("tables", "figures"):
        for item, spec in config[section].items():
            for slot, exp in spec["slots"].items():
                if exp not in config["experiments"]:
                    raise unknown_name_error("experiment", exp, config["experiments"], f"{source}: {section}.{item}.slots.{slot}")
    for ck, spec in config["checkpoints"].items():
        if spec["dataset"] not in config["datasets"]:
            raise unknown_name_error("dataset", spec["dataset"], config["datasets"], f"{source}: checkpoints.{ck}.dataset")
        if "pretrain" in spec and spec["kind"] != "edm":
            raise ConfigError(f"{source}: checkpoints.{ck}: only kind 'edm' can be pre-trained here (kind is "
                              f"'{spec['kind']}'); give a url instead")
    return config


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found; use config/config.yaml (paper) or config/demo.yaml (demo)")
    return validate(_load_yaml(path), str(path))


def resolve_experiment(config: dict, name: str, source: str = "config") -> dict:
    """The fully merged, schema-checked settings of one experiment."""
    experiments = config["experiments"]
    if name not in experiments:
        raise unknown_name_error("experiment", name, experiments, source)
    chain, cur = [], name
    while cur is not None:
        if cur in chain:
            raise ConfigError(f"{source}: experiments.{name}: 'extends' cycle {' -> '.join(chain + [cur])}")
        if cur not in experiments:
            raise unknown_name_error("experiment", cur, experiments, f"{source}: experiments.{chain[-1]}.extends")
        chain.append(cur)
        cur = experiments[cur].get("extends")
    merged: dict = {}
    for link in reversed(chain):
        merged = deep_merge(merged, experiments[link])
    merged.pop("extends", None)
    dataset = merged.get("dataset")
    if dataset not in config["datasets"]:
        raise unknown_name_error("dataset", str(dataset), config["datasets"], f"{source}: experiments.{name}.dataset")
    base = deep_merge(config.get("defaults", {}), config.get("dataset_defaults", {}).get(dataset, {}))
    if merged.get("kind", base.get("kind")) != "train":
        base = {k: v for k, v in base.items() if k in ("eval", "resources", "conditional")}
    resolved = deep_merge(base, merged)
    _check(resolved, EXPERIMENT_SCHEMA, source, prefix=f"experiments.{name}")
    checkpoint_refs = [("init", resolved.get("init"), "edm")]
    if resolved["kind"] == "edm_sampler":
        checkpoint_refs.append(("sampler.checkpoint", resolved["sampler"]["checkpoint"], "edm"))
    if resolved["kind"] == "train" and resolved["discriminator"].get("init"):
        if resolved["discriminator"]["type"] != "stylegan2":
            raise ConfigError(f"{source}: experiments.{name}.discriminator.init: only a stylegan2 discriminator starts from "
                              f"a checkpoint (type is {resolved['discriminator']['type']!r}); remove init or set type: stylegan2")
        checkpoint_refs.append(("discriminator.init", resolved["discriminator"]["init"], "stylegan2ada-discriminator"))
    kinds = {n: c.get("kind", "edm") for n, c in config["checkpoints"].items()}  # the schema's default
    for key, ck, kind in checkpoint_refs:
        if not ck:
            continue
        if ck not in kinds:
            raise unknown_name_error("checkpoint", ck, kinds, f"{source}: experiments.{name}.{key}")
        if kinds[ck] != kind:
            raise ConfigError(f"{source}: experiments.{name}.{key}: checkpoint '{ck}' is of kind '{kinds[ck]}', this key "
                              f"needs kind '{kind}'; choose one of {', '.join(sorted(n for n, k in kinds.items() if k == kind))}")
    for other in resolved["eval"]["compare_with"]:
        if other not in experiments:
            raise unknown_name_error("experiment", other, experiments, f"{source}: experiments.{name}.eval.compare_with")
    if resolved["conditional"] and config["datasets"][dataset]["label_dim"] == 0:
        raise ConfigError(f"{source}: experiments.{name}.conditional: dataset '{dataset}' has no labels (label_dim 0); set conditional: false")
    if resolved["kind"] == "train":
        _check_batch_split(resolved, f"{source}: experiments.{name}")
    resolved["name"] = name
    resolved["label_dim"] = config["datasets"][dataset]["label_dim"] if resolved["conditional"] else 0
    resolved["offline"] = config["offline"]
    resolved["label"] = config["label"]
    return resolved


def _check_batch_split(exp: dict, where: str) -> None:
    """batch = GPUs x virtual GPUs x batch_gpu, and round_batch groups whole virtual GPUs of one GPU (d2o.training)."""
    gpus, batch = max(exp["resources"]["gpus"], 1), exp["batch"]
    bg = exp.get("batch_gpu")
    if bg and batch % (gpus * bg):
        raise ConfigError(f"{where}.batch_gpu: batch {batch} is not a multiple of resources.gpus ({gpus}) x batch_gpu "
                          f"({bg}); choose GPUs and batch_gpu whose product divides it")
    rb = exp.get("round_batch")
    if not rb:
        return
    bg = bg or batch // gpus
    if rb % bg or (batch // gpus) % rb:
        raise ConfigError(f"{where}.round_batch: {rb} must be a multiple of batch_gpu ({bg}) that divides the "
                          f"{batch // gpus} samples per GPU (batch {batch} / resources.gpus {gpus}); choose one of "
                          f"{', '.join(str(k * bg) for k in range(1, batch // gpus // bg + 1) if (batch // gpus) % (k * bg) == 0)}")
    if rb > bg and exp["method"] != "cd" and exp["discriminator"]["type"] != "projected":
        raise ConfigError(f"{where}.round_batch: several virtual GPUs per pass need the projected discriminator "
                          f"(discriminator.type is {exp['discriminator']['type']!r}); remove round_batch")


def snapshot_kimgs(exp: dict) -> list[int]:
    """Image counts (kimg) at which a training run saves an EMA snapshot: `first`, every multiple of `every`, the end."""
    total = round(exp["duration_mimg"] * 1000)
    first, every = exp["snapshot_kimg"]["first"], exp["snapshot_kimg"]["every"]
    points = {round(first)} | {round(every * i) for i in range(1, int(total // every) + 1)} | {total}
    return sorted(p for p in points if 0 < p <= total)
