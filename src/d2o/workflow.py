"""Glue shared by the thin workflow scripts (workflow/scripts/*.py): logging into the rule's log file, devices,
metric settings from the registry."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def setup_logging(log_path: str | None = None, level=logging.INFO) -> logging.Logger:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True)
    return logging.getLogger("d2o")


def from_snakemake(smk) -> logging.Logger:
    """Log to the rule's log file; limit torch threads to the rule's threads; fail at once if an output folder is not
    writable (not after the job's work)."""
    from d2o.io import check_writable

    check_writable(smk.output)
    limit_threads(max(1, int(getattr(smk, "threads", 1) or 1)))
    return setup_logging(smk.log[0] if len(smk.log) else None)


def limit_threads(n: int) -> None:
    """torch's CPU threads: set now if torch is loaded, else through the OpenMP / MKL environment it reads when it
    loads (a job that never imports torch, such as a settings, table or figure job, does not pay its ~1 s start-up)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def metric_kwargs(features, which: str = "fid", weights=(), label: str | None = None) -> dict:
    """Feature extractor, layer, weights, batch and label for one metric from the registry's feature extractors
    (d2o.settings.MetricFeatures: the one place that says whether metrics are offline). `weights`: the job's
    declared weight inputs (d2o.weights.metric_weights: the converted Inception or CLIP file; none offline).
    `label`: the registry's (e.g. a smoke run's), kept unless the features are the demo's."""
    from d2o import metrics

    mode = "demo" if features.offline and features.extractor == "inception" else features.extractor
    s = metrics.extractor_settings(mode)
    if label and mode == "inception":
        s["label"] = label
    weights = list(weights or [])
    if len(weights) > 1:
        raise ValueError(f"one weights file per metric job, got {weights}")
    path = weights[0] if weights else None
    if which == "clip_fid":
        return dict(feature_extractor=s["clip_extractor"], layer=s["layer_clip"], weights_path=path,
                    batch_size=features.batch, label=s["label"])
    layer = {"fid": s["layer_fid"], "is": s["layer_isc"], "pr": s["layer_prc"]}[which]
    return dict(feature_extractor=s["feature_extractor"], layer=layer, weights_path=path, batch_size=features.batch,
                label=s["label"])


def job_weights(smk) -> list[str]:
    """The registry weight files a job was given (its `weights` input; d2o.weights)."""
    return list(smk.input.weights) if "weights" in smk.input.keys() else []


def result_record(res: dict, experiment: str, samples=None, dev=None, weights=()) -> dict:
    """A metric result with what it is bound to: the experiment, the samples' and model's identities (recorded in
    the sample zip by merge_samples), the feature extractor's weights (SHA-256 of the upstream file) and the
    provenance (code, versions, hardware)."""
    from d2o.identity import provenance
    from d2o.weights import weights_record

    extra = getattr(samples, "extra", {}) or {}
    return {**res, "experiment": experiment, "model_identity": extra.get("model_identity"),
            "samples_identity": extra.get("samples_identity"), "weights": weights_record(weights),
            "provenance": provenance(dev)}
