# D2O reproduction: one DAG from datasets to the paper's tables and figures.
#   snakemake --profile slurm results/tables/table4.tex          (paper, on a SLURM GPU cluster)
#   snakemake --configfile config/demo.yaml --cores 2 demo        (offline demo, 2 CPU cores)
# The registry (config/config.yaml or config/demo.yaml) is validated against the schemas in src/d2o/data/.
from snakemake.utils import min_version

min_version("9.0")


# The paper registry unless another one is given with --configfile (the registries never merge).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/checkpoints.smk"
include: "rules/weights.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/evaluate.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


onstart:
    check_cluster()


rule all:
    default_target: True
    input:
        paper_targets(),
