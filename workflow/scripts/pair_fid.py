"""FID between two generated sets with the same seeds (teacher vs student, Fig 2)."""
from d2o import metrics
from d2o.datasets import ImageZipDataset
from d2o.io import atomic_write_json
from d2o.workflow import device, from_snakemake, metric_kwargs

log = from_snakemake(snakemake)
a, b = ImageZipDataset(snakemake.input.samples), ImageZipDataset(snakemake.input.other)
kw = metric_kwargs(snakemake.params.metrics, snakemake.params.offline, "fid")
res = metrics.compute_fid_generated(a, b, num_samples=min(len(a), len(b)), device=device(),
                                    reference_name=snakemake.wildcards.other, **kw)
res.update(experiment=snakemake.wildcards.experiment, other=snakemake.wildcards.other)
atomic_write_json(snakemake.output[0], res)
log.info("FID(%s, %s) = %.4f", snakemake.wildcards.experiment, snakemake.wildcards.other, res["value"])
