"""Write one part of an experiment's typed settings (d2o.settings.Experiment.part) as JSON."""
from d2o.io import atomic_write_json
from d2o.workflow import from_snakemake

from_snakemake(snakemake)
atomic_write_json(snakemake.output[0], dict(snakemake.params.part))
