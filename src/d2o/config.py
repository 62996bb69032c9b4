"""The config registry: loading, JSON-schema validation and experiment resolution.

A registry file (config/config.yaml for the paper, config/demo.yaml for the offline demo) declares datasets,
checkpoints, experiments and which experiments each table and figure needs. An experiment resolves as
`defaults` <- `dataset_defaults[dataset]` <- its `extends` chain <- its own keys (deep merge), and the result is
validated against the package's data/experiment.schema.yaml (the registry itself against data/registry.schema.yaml). Every error is one line naming the file, the key and the fix.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path

import jsonschema
import yaml

from d2o.settings import DISCRIMINATOR_COMMON, Experiment, MetricFeatures, SettingsError, metric_features_of, unused_keys
from d2o.weights import KINDS as WEIGHT_KINDS
from d2o.weights import metric_weights, training_weights

DATA_DIR = Path(__file__).resolve().parent / "data"  # shipped with the package (pyproject package-data)
REGISTRY_SCHEMA = DATA_DIR / "registry.schema.yaml"
EXPERIMENT_SCHEMA = DATA_DIR / "experiment.schema.yaml"


class ConfigError(ValueError):
    """A malformed registry: the message names the file, the key and the valid choices."""


def _load_yaml(path: Path) -> dict:
    """A YAML file; a syntax error names the file, line and column (Snakemake's own --configfile reading says only
    "Config file is not valid JSON or YAML": tools/check_config.py reads a registry through here)."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({e.problem or e.context}); fix the syntax there") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the syntax there") from None


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
            extra = sorted(set(e.instance) - set(allowed)) if isinstance(e.instance, dict) else []
            close = difflib.get_close_matches(extra[0], allowed, n=2) if extra else []
            hint = (f" (did you mean {', '.join(close)}?)" if close else "") + f"; valid keys: {', '.join(allowed)}"
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


def target_error(target: str, config: dict) -> str | None:
    """Why a target path names nothing of the registry (None when its names are known): an experiment, table, figure,
    checkpoint or sample grid under the results folder that the registry does not declare."""
    results = config["paths"]["results"].rstrip("/") + "/"
    if not target.startswith(results):
        return None
    parts = target[len(results):].split("/")
    stem = parts[-1].split(".")[0]
    kind, name, choices = {
        "tables": ("table", stem, config["tables"]),
        "figures": ("figure", stem, config["figures"]),
        "grids": ("experiment", stem, config["experiments"]),
        "checkpoints": ("checkpoint", stem, config["checkpoints"]),
    }.get(parts[0], ("experiment", parts[0], config["experiments"]))
    if len(parts) == 1 or parts[0] in ("refs", "analysis") or name in choices:
        return None
    return str(unknown_name_error(kind, name, choices, target))


def validate(config: dict, source: str = "config") -> dict:
    """Validate a registry in place (schema defaults filled) and every experiment it declares; returns it."""
    _check(config, REGISTRY_SCHEMA, source)
    for name, spec in config["weights"].items():
        networks = WEIGHT_KINDS[spec["kind"]]
        if networks is not None and name not in networks:
            raise ConfigError(f"{source}: weights.{name}: an entry of kind {spec['kind']} is named after the network "
                              f"that reads it: one of {', '.join(networks)}")
    shapes = [n for n, d in config["datasets"].items() if d["source"].get("format") == "shapes"]
    for name, spec in config["demo_cnns"].items():
        if spec["dataset"] not in shapes:
            raise ConfigError(f"{source}: demo_cnns.{name}.dataset: {spec['dataset']!r} is not a procedural shapes "
                              f"dataset; choose one of {', '.join(shapes) or '(none declared)'}")
        if name in config["weights"]:
            raise ConfigError(f"{source}: demo_cnns.{name}: also a weights entry; a weight is downloaded or trained, not both")
    if config["metrics"]["extractor"] == "demo-trained" and config["metrics"].get("demo_extractor") not in config["demo_cnns"]:
        raise unknown_name_error("demo_cnns entry", str(config["metrics"].get("demo_extractor")), config["demo_cnns"],
                                 f"{source}: metrics.demo_extractor (extractor demo-trained)")
    for name in config["experiments"]:
        _check_weights(config, name, experiment_settings(config, name, source), source)
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


def load_config(*paths: str | Path) -> dict:
    """The validated registry of one file, or of several merged in order as Snakemake merges `--configfile a b`
    (a nested mapping key by key, anything else replaced): e.g. config/config.yaml and the overlay config/smoke.yaml."""
    merged: dict = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; use config/config.yaml (paper) or config/demo.yaml "
                              f"(demo), and put the targets before --configfile (it takes every name after it)")
        data = _load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a registry is a YAML mapping (datasets:, experiments:, ...), not "
                              f"{type(data).__name__}")
        merged = deep_merge(merged, data)
    return validate(merged, ", ".join(map(str, paths)))


def _merge_link(merged: dict, origin: dict, link: dict, index: int, path: tuple = ()) -> None:
    """Deep-merge one link of an experiment's chain into `merged`, recording for every leaf key path the index of
    the link that set it. A link that changes `discriminator.type` does not inherit the previous type's knobs."""
    for k, v in link.items():
        p = path + (k,)
        if p == ("discriminator",) and isinstance(v, dict) and isinstance(merged.get(k), dict) and "type" in v \
                and v["type"] != merged[k].get("type", DISCRIMINATOR_COMMON["type"]):
            merged[k] = {kk: vv for kk, vv in merged[k].items() if kk in DISCRIMINATOR_COMMON}
            for q in [q for q in origin if q[:1] == p and q[1:2] and q[1] not in DISCRIMINATOR_COMMON]:
                del origin[q]
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            _merge_link(merged[k], origin, v, index, p)
            continue
        for q in [q for q in origin if q[:len(p)] == p]:
            del origin[q]
        merged[k] = copy.deepcopy(v)
        for leaf in _leaves(v, p):
            origin[leaf] = index


def _leaves(v, path: tuple):
    if isinstance(v, dict) and v:
        for k, sub in v.items():
            yield from _leaves(sub, path + (k,))
    else:
        yield path


def _origin_of(origin: dict, path: tuple) -> int:
    """The last link that set `path` or anything under it (-1: none)."""
    return max((i for q, i in origin.items() if q[:len(path)] == path), default=-1)


def _drop_inherited_unused(merged: dict, origin: dict, links: list, source: str, name: str) -> None:
    """Knobs the experiment's kind, method or discriminator type does not use: dropped when inherited from a link
    before the one that chose the kind / method / type, an error naming the key when written at or after it."""
    for key, why in unused_keys(merged):
        path = tuple(key.split("."))
        chosen = _origin_of(origin, _selector(merged, path))
        set_at = _origin_of(origin, path)
        if set_at >= chosen:
            raise ConfigError(f"{source}: {links[set_at][0]}.{key}: {why}; remove it (experiment {name})")
        _delete(merged, path)


def _selector(merged: dict, path: tuple) -> tuple:
    """The key whose value makes the knob at `path` unused."""
    if merged.get("kind", "train") != "train" or path == ("sampler",):
        return ("kind",)
    if path == ("middle_sigma",):
        return ("generator_steps",)
    if path == ("discriminator", "class_embedding"):
        return ("conditional",)
    if path[0] == "discriminator" and len(path) > 1:
        return ("discriminator", "type")
    return ("method",)


def _delete(d: dict, path: tuple) -> None:
    for part in path[:-1]:
        d = d[part]
    del d[path[-1]]


def resolve_experiment(config: dict, name: str, source: str = "config") -> dict:
    """The fully merged, schema-checked settings of one experiment (a plain dict; `experiment_settings` types it).

    Links, in order: `defaults`, `dataset_defaults.<dataset>`, the `extends` chain from its root, the experiment.
    Errors name the link that wrote the bad key (a typo under `defaults:` is reported there)."""
    return _resolve(config, name, source)[0]


def _override_present(merged: dict, overrides: dict) -> None:
    """Set the keys of `overrides` that `merged` has (recursively): knobs an experiment does not use stay unset."""
    for k, v in overrides.items():
        if k in merged and isinstance(v, dict) and isinstance(merged[k], dict):
            _override_present(merged[k], v)
        elif k in merged:
            merged[k] = copy.deepcopy(v)


def _resolve(config: dict, name: str, source: str):
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
    dataset = next((experiments[c]["dataset"] for c in chain if "dataset" in experiments[c]), None)
    if dataset not in config["datasets"]:
        where = next((f"experiments.{c}.dataset" for c in chain if "dataset" in experiments[c]), f"experiments.{name}.dataset")
        raise unknown_name_error("dataset", str(dataset), config["datasets"], f"{source}: {where}")
    links = [("defaults", config.get("defaults", {})),
             (f"dataset_defaults.{dataset}", config.get("dataset_defaults", {}).get(dataset, {}))]
    links += [(f"experiments.{c}", {k: v for k, v in experiments[c].items() if k != "extends"}) for c in reversed(chain)]
    merged, origin = {}, {}
    for i, (_, link) in enumerate(links):
        _merge_link(merged, origin, link, i)
    _drop_inherited_unused(merged, origin, links, source, name)
    try:
        _check(merged, EXPERIMENT_SCHEMA, source, prefix=f"experiments.{name}")
    except ConfigError as e:
        raise ConfigError(_blame(str(e), merged, origin, links, name)) from None
    for key, _ in unused_keys(merged):  # schema defaults of knobs this kind / method does not use
        _delete(merged, tuple(key.split(".")))
    if config.get("every_experiment"):  # an overlay's last word on every experiment (e.g. config/smoke.yaml)
        _override_present(merged, config["every_experiment"])
        _check(merged, EXPERIMENT_SCHEMA, source, prefix=f"experiments.{name} (after every_experiment)")
        for key, _ in unused_keys(merged):
            _delete(merged, tuple(key.split(".")))
    resolved = merged
    checkpoint_refs = [("init", resolved.get("init"), "edm")]
    if resolved["kind"] == "edm_sampler":
        checkpoint_refs.append(("sampler.checkpoint", resolved["sampler"]["checkpoint"], "edm"))
    disc = resolved.get("discriminator") or {}
    if resolved["kind"] == "train" and disc.get("init"):
        checkpoint_refs.append(("discriminator.init", disc["init"], "stylegan2ada-discriminator"))
    kinds = {n: c.get("kind", "edm") for n, c in config["checkpoints"].items()}  # the schema's default
    for key, ck, kind in checkpoint_refs:
        if not ck:
            continue
        if ck not in kinds:
            raise unknown_name_error("checkpoint", ck, kinds, f"{source}: experiments.{name}.{key}")
        if kinds[ck] != kind:
            raise ConfigError(f"{source}: experiments.{name}.{key}: checkpoint '{ck}' is of kind '{kinds[ck]}', this key "
                              f"needs kind '{kind}'; choose one of {', '.join(sorted(n for n, k in kinds.items() if k == kind))}")
    emb = (resolved.get("discriminator") or {}).get("class_embedding")
    embeddings = [w for w, spec in config.get("weights", {}).items() if spec["kind"] == "class-embedding"]
    if emb and emb not in embeddings:
        raise unknown_name_error("class-embedding weights entry", emb, embeddings,
                                 f"{source}: experiments.{name}.discriminator.class_embedding")
    for other in resolved["eval"]["compare_with"]:
        if other not in experiments:
            raise unknown_name_error("experiment", other, experiments, f"{source}: experiments.{name}.eval.compare_with")
    if resolved["conditional"] and config["datasets"][dataset]["label_dim"] == 0:
        raise ConfigError(f"{source}: experiments.{name}.conditional: dataset '{dataset}' has no labels (label_dim 0); set conditional: false")
    resolved["name"] = name
    resolved["label_dim"] = config["datasets"][dataset]["label_dim"] if resolved["conditional"] else 0
    resolved["offline"] = config["offline"]
    resolved["label"] = config["label"]
    resolved["metrics"] = dict(config["metrics"])
    resolved["dataset_images"] = config["datasets"][dataset].get("expected", {}).get("images")
    return resolved, origin, links


def _blame(message: str, merged: dict, origin: dict, links: list, name: str) -> str:
    """Rewrite a schema error's `experiments.<name>.<key>` to the link that wrote that key."""
    m = re.match(rf"(.*?)experiments\.{re.escape(name)}((?:\.[^:]+)?): (.*)$", message)
    if not m:
        return message
    head, keypath, tail = m.group(1), m.group(2).lstrip("."), m.group(3)
    path = tuple(keypath.split(".")) if keypath else ()
    m = re.search(r"'([^']+)' (?:was|were) unexpected", tail)
    if m:  # an additionalProperties error is reported at the parent: blame the link of the unexpected key
        path = path + (m.group(1),)
    set_at = _origin_of(origin, path)
    where = links[set_at][0] if set_at >= 0 else f"experiments.{name}"
    return f"{head}{where}.{'.'.join(path)}: {tail}" + ("" if where == f"experiments.{name}" else f" (experiment {name})")


def experiment_settings(config: dict, name: str, source: str = "config") -> Experiment:
    """The typed settings (d2o.settings.Experiment) of one experiment of a validated registry."""
    resolved, origin, links = _resolve(config, name, source)
    try:
        return Experiment.from_resolved(resolved)
    except SettingsError as e:
        raise ConfigError(_blame(f"{source}: {e}", resolved, origin, links, name)) from None


def _check_weights(config: dict, name: str, e: Experiment, source: str) -> None:
    """Every pretrained network an experiment's jobs read is a registry weight (jobs never fetch from a hub)."""
    needed = list(training_weights(e.training)) if e.training is not None else []
    metrics = list(e.evaluation.metrics) + (["fid"] if e.evaluation.snapshot_metrics or e.evaluation.compare_with else [])
    needed += [w for m in metrics for w in metric_weights("fid" if m == "fid_dataset" else m, e.evaluation.features)]
    for w in dict.fromkeys(needed):
        if w not in config["weights"] and w not in config["demo_cnns"]:
            raise ConfigError(f"{source}: experiments.{name} reads the pretrained weights of {w!r}, which the registry "
                              f"does not declare: add weights.{w} (kind, url, sha256, description; d2o.weights), or "
                              f"set offline: true for random-init networks")


def metric_features(config: dict) -> MetricFeatures:
    """The registry's metric feature extractors (`metrics` block and `offline`), typed."""
    return metric_features_of(config["metrics"], config["offline"])


ARCHITECTURES = ("NCSN++", "DDPM++", "ADM")


_DEFAULT_MODEL_TYPE = {"VPPrecond": "SongUNet", "VEPrecond": "SongUNet"}  # EDM's preconditioner defaults; others ADM


def architecture_of(network: dict, class_name: str | None = None) -> str:
    """EDM's name of a U-Net configuration (a preconditioner's class and kwargs): NCSN++ (SongUNet, Fourier
    embedding), DDPM++ (SongUNet, positional embedding) or ADM (DhariwalUNet)."""
    class_name = class_name or network.get("class")
    model_type = network.get("model_type", _DEFAULT_MODEL_TYPE.get(class_name, "DhariwalUNet"))
    if model_type == "DhariwalUNet":
        return "ADM"
    return "NCSN++" if network.get("embedding_type", "positional") == "fourier" else "DDPM++"


def checkpoint_architectures(config: dict) -> dict:
    """Checkpoint name -> generator architecture: the registry's `architecture` of a downloaded checkpoint (checked
    when it is converted), or that of a pre-trained one's network."""
    out = {}
    for name, spec in config["checkpoints"].items():
        if spec.get("architecture"):
            out[name] = spec["architecture"]
        elif "pretrain" in spec:
            out[name] = architecture_of(spec["pretrain"]["network"])
    return out
