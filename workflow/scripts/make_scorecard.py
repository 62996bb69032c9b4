"""The reproduction scorecard: every number the paper reports for its own methods beside the reproduced one."""
from pathlib import Path

from d2o import report, scorecard
from d2o.literature import load_literature
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
results = Path(snakemake.output.md).parent  # <results>/scorecard.md -> <results>
p = snakemake.params
computed = report.scorecard_values(results, p.tables)
scorecard.write(load_literature(p.literature), computed, p.label, snakemake.output.md, snakemake.output.csv)
log.info("scorecard: %d computed values", len(computed))
