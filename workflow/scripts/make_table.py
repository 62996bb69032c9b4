"""One paper table (LaTeX + Markdown) from the DAG's metric files (Table 10: from the settings) and the literature."""
from pathlib import Path

from d2o import report, tables
from d2o.literature import load_literature
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
results = Path(snakemake.output.tex).parents[1]  # <results>/tables|figures/... -> <results>
p, name = snakemake.params, snakemake.wildcards.table
data = p.table10 if name == "table10" else report.collect_slots(results, p.slots, p.collapse_fid)
tables.write_table(name, data, load_literature(p.literature), p.label, snakemake.output.tex, snakemake.output.md)
log.info("%s: %d slots", name, len(data))
