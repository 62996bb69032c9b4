"""FID between two generated sets with the same seeds (teacher vs student, Fig 2)."""
from d2o import metrics
from d2o.datasets import ImageZipDataset
from d2o.io import atomic_write_json
from d2o.settings import read_part
from d2o.workflow import device, from_snakemake, job_weights, metric_kwargs, result_record

log = from_snakemake(snakemake)
name, ev = read_part(snakemake.input.evaluation, "evaluation")
a, b = ImageZipDataset(snakemake.input.samples), ImageZipDataset(snakemake.input.other)
dev = device()
res = metrics.compute_fid_generated(a, b, num_samples=min(len(a), len(b)), device=dev,
                                    reference_name=snakemake.wildcards.other, **metric_kwargs(ev.features, "fid", job_weights(snakemake), ev.label))
res = result_record(res, name, a, dev, job_weights(snakemake))
res.update(other=snakemake.wildcards.other, other_samples_identity=b.extra.get("samples_identity"))
atomic_write_json(snakemake.output[0], res)
log.info("FID(%s, %s) = %.4f", name, snakemake.wildcards.other, res["value"])
