"""One metric of one experiment's samples (d2o.metrics, torch-fidelity), as JSON."""
import numpy as np

from d2o import metrics
from d2o.datasets import ImageZipDataset
from d2o.io import atomic_write_json
from d2o.workflow import device, from_snakemake, metric_kwargs, read_json

log = from_snakemake(snakemake)
exp = read_json(snakemake.input.config)
m, offline = snakemake.wildcards.metric, exp["offline"]
samples = ImageZipDataset(snakemake.input.samples)
n = exp["eval"]["num_samples"]
dev = device()
if m in ("fid", "fid_dataset"):
    kw = metric_kwargs(snakemake.params.metrics, offline, "fid")
    res = metrics.compute_fid(samples, snakemake.input.ref, n, device=dev, metric_name=m, **kw)
elif m == "is":
    kw = metric_kwargs(snakemake.params.metrics, offline, "is")
    res = metrics.compute_is(samples, splits=10, shuffle=False, num_samples=n, device=dev, **kw)
elif m == "pr":
    kw = metric_kwargs(snakemake.params.metrics, offline, "pr")
    ref = snakemake.input.ref
    refs = ImageZipDataset(ref) if ref.endswith(".zip") else metrics.as_image_dataset(np.load(ref)["arr_0"])
    res = metrics.compute_pr(samples, refs, k=3, num_samples=n, device=dev, reference_name=ref, **kw)
elif m == "clip_fid":
    kw = metric_kwargs(snakemake.params.metrics, offline, "clip_fid")
    res = metrics.compute_clip_fid(samples, snakemake.input.ref, n, device=dev, **kw)
else:
    raise ValueError(f"unknown metric {m}")
res["experiment"] = exp["name"]
atomic_write_json(snakemake.output[0], res)
log.info("%s %s = %s", exp["name"], m, res["value"])
