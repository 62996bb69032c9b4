"""One metric of one experiment's samples (d2o.metrics, torch-fidelity), as JSON with what it is bound to."""
import numpy as np

from d2o import metrics
from d2o.datasets import ImageZipDataset
from d2o.download import VALIDATORS, verify_file
from d2o.io import atomic_write_json
from d2o.settings import read_part
from d2o.workflow import device, from_snakemake, job_weights, metric_kwargs, result_record

log = from_snakemake(snakemake)
name, ev = read_part(snakemake.input.evaluation, "evaluation")
m = snakemake.wildcards.metric
if snakemake.params.ref_check:  # a downloaded reference (or a copy put into place by hand): verified before use
    c = snakemake.params.ref_check
    verify_file(snakemake.input.ref, c["sha256"] or None, c["lock"], c["key"], VALIDATORS["npz"])
samples = ImageZipDataset(snakemake.input.samples)
n = ev.num_samples
dev = device()
kw = metric_kwargs(ev.features, "fid" if m == "fid_dataset" else m, job_weights(snakemake), ev.label)
if m in ("fid", "fid_dataset"):
    res = metrics.compute_fid(samples, snakemake.input.ref, n, device=dev, metric_name=m, **kw)
elif m == "is":
    res = metrics.compute_is(samples, splits=10, shuffle=False, num_samples=n, device=dev, **kw)
elif m == "pr":
    ref = snakemake.input.ref
    refs = ImageZipDataset(ref) if ref.endswith(".zip") else metrics.as_image_dataset(np.load(ref)["arr_0"])
    res = metrics.compute_pr(samples, refs, k=3, num_samples=n, device=dev, reference_name=ref, **kw)
elif m == "clip_fid":
    res = metrics.compute_clip_fid(samples, snakemake.input.ref, n, device=dev, **kw)
else:
    raise ValueError(f"unknown metric {m}")
atomic_write_json(snakemake.output[0], result_record(res, name, samples, dev, job_weights(snakemake)))
log.info("%s %s = %s", name, m, res["value"])
