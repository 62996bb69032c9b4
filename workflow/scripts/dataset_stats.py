"""Feature statistics of a prepared dataset (computed once per dataset, reused by every model's FID / CLIP-FID)."""
from d2o import metrics
from d2o.datasets import ImageZipDataset
from d2o.settings import MetricFeatures, from_dict
from d2o.workflow import device, from_snakemake, job_weights, metric_kwargs

log = from_snakemake(snakemake)
clip = snakemake.wildcards.clip == "-clip"
features = from_dict(MetricFeatures, snakemake.params.features)
kw = metric_kwargs(features, "clip_fid" if clip else "fid", job_weights(snakemake))
images = ImageZipDataset(snakemake.input.dataset)
if clip:  # clean-fid's CLIP protocol: PIL bicubic + centre crop to 224 before the features
    images = metrics.CleanFIDClipResize(images)
stats = metrics.compute_stats(images, kw["feature_extractor"], kw["layer"], kw["weights_path"], kw["batch_size"], device())
metrics.save_stats(stats, snakemake.output[0])
log.info("statistics of %s (%s) -> %s", snakemake.input.dataset, kw["feature_extractor"], snakemake.output[0])
