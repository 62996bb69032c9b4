# Tables (LaTeX + Markdown), figures (PDF + PNG) and the reproduction scorecard, from DAG artefacts only.
# Literature rows come from the package's d2o/data/literature.yaml (an input: editing it rebuilds the tables), each value with its source.


rule table:
    input:
        lambda wc: report_inputs("tables", wc.table) + [LITERATURE],
    output:
        tex=report(f"{R}/tables/{{table}}.tex", category="Tables", labels={"table": "{table}", "format": "LaTeX"}),
        md=report(f"{R}/tables/{{table}}.md", category="Tables", labels={"table": "{table}", "format": "Markdown"}),
    params:
        slots=lambda wc: config["tables"][wc.table]["slots"],
        table10=lambda wc: table10_columns(config["tables"]["table10"]["slots"], EXPERIMENTS, ARCHITECTURES) if wc.table == "table10" else None,
        label=config["label"],
        collapse_fid=config["collapse_fid"],
        literature=lambda wc, input: input[-1],  # LITERATURE, the last input
    localrule: True
    log:
        f"{L}/table/{{table}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/make_table.py"


rule figure:
    input:
        lambda wc: report_inputs("figures", wc.figure) + [LITERATURE],
    output:
        pdf=report(f"{R}/figures/{{figure}}.pdf", category="Figures", labels={"figure": "{figure}", "format": "PDF"}),
        png=f"{R}/figures/{{figure}}.png",
    params:
        slots=lambda wc: config["figures"][wc.figure]["slots"],
        datasets=lambda wc: {s: dataset_zip(EXPERIMENTS[e].dataset) for s, e in config["figures"][wc.figure]["slots"].items()},
        label=config["label"],
        literature=lambda wc, input: input[-1],  # LITERATURE, the last input
        frequency=config["frequency"],
    localrule: True
    log:
        f"{L}/figure/{{figure}}.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/make_figure.py"


rule scorecard:
    input:
        [f for item in config["tables"] for f in report_inputs("tables", item)] + [LITERATURE],
    output:
        md=report(f"{R}/scorecard.md", category="Scorecard"),
        csv=f"{R}/scorecard.csv",
    params:
        tables={t: spec["slots"] for t, spec in config["tables"].items()},
        label=config["label"],
        literature=lambda wc, input: input[-1],  # LITERATURE, the last input
    localrule: True
    log:
        f"{L}/scorecard.log",
    conda:
        "../envs/local.yaml"
    script:
        "../workflow/scripts/make_scorecard.py"


rule demo:
    input:
        demo_targets,
    localrule: True



rule unknown_target:
    """A results path naming no experiment, table or figure of the registry (see unknown_target in common.smk)."""
    output:
        f"{R}/{{unknown}}",
    wildcard_constraints:
        unknown=rf"(?!{known_results()}).+",
    input:
        unknown_target,
    localrule: True
