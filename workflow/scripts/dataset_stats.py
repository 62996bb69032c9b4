"""Feature statistics of a prepared dataset (computed once per dataset, reused by every model's FID)."""
from d2o import metrics
from d2o.datasets import ImageZipDataset
from d2o.workflow import device, from_snakemake, metric_kwargs

log = from_snakemake(snakemake)
kw = metric_kwargs(snakemake.params.metrics, snakemake.wildcards.extractor == "demo")
stats = metrics.compute_stats(ImageZipDataset(snakemake.input[0]), kw["feature_extractor"], kw["layer"],
                              kw["weights_path"], kw["batch_size"], device())
metrics.save_stats(stats, snakemake.output[0])
log.info("statistics of %s (%s) -> %s", snakemake.input[0], kw["feature_extractor"], snakemake.output[0])
