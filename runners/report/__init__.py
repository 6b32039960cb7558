"""Tables and plots from the cell records of a sweep, shaped like the papers' tables:
`python -m runners.report <sweep dir> [<more> ...] [--out DIR]` (it also runs at the end of every multirun).
Cells go to a table by what their strategy class declares (bench/strategies/base.py: its baseline, its
rivals, its paper-shaped table) and their teacher by its role (bench/config.py TeacherRole).

- an iterative strategy's table (LLM2LLM, Lee et al., Table 1): rows task x |S|, columns the baseline,
  each variant and its gain with its verdict;
- every comparison (runners/report/verdicts.py): Δ over paired replicates, its interval, P(A>B), p,
  helps / hurts / can't tell, and the noise it is judged against; where a strategy ran under several
  settings with replicates, each setting against the plainest (a recipe's mean and noise together);
- a budget-spending family's table (Chan, Pu et al.): accuracy per strategy over the budget ratio BR, for
  each |S|;
- diversity: each diversity score of the cells' generated data against the mean zero-shot accuracy
  after pre-training and after SFT (the diversity paper's quantity, where scored) and the task's test
  accuracy (Spearman and Pearson with bootstrap intervals, per task and pooled, a scatter per score);
- every cell: its overrides, accuracy, time, trainings and teacher cost.
Several seeds (seed_set.seed) of one cell are shown as mean ± std. Writes report.md, one CSV per
table, PNG and SVG plots, and report.html (the same as one page, with a data browser over the generated
data: runners/report/html.py) into DIR (default <sweep dir>/report)."""

from pathlib import Path

import pandas as pd

from bench.evaluation import FEW_STEPS, MOSTLY_INVALID
from runners.report.html import browser_rows, write_html
from runners.report.paper import paper_table
from runners.report.plots import plot_budget, plot_diversity, plot_iterations
from runners.report.tables import (
    budget_table,
    cells_table,
    cluster_agent_table,
    diversity_table,
    frame,
    iterations_table,
    markdown,
    well_formed,
)
from runners.report.verdicts import (
    by_metric,
    comparisons,
    headline,
    iteration_table,
    noise_table,
    one_family,
    recipe_table,
)

TITLES = {  # and the paper-shaped tables, each titled by the strategy class that declares it
    "diversity": ("Diversity of the generated data vs what it did for the student (the mean zero-shot "
                  "accuracy where scored, the task's test accuracy): correlation across cells (a cell's "
                  "training replicates one point; 95% bootstrap intervals), per task, ranked by |Spearman|"),
    "cluster_agent": "The LLM cluster agent on each cell's generated data: score and valid rounds",
    "comparisons": ("Every comparison, with its verdict: Δ = A - B over replicates paired by seed set "
                    "and replicate, its 95% t interval, P(A>B) (paired) or CL (unpaired) with intervals, "
                    "the test and its p, q over every test of the report (Benjamini-Hochberg), helps / "
                    "hurts / can't tell, the minimum detectable effect at 80% power (noncentral t, the "
                    "noise sd pooled over the task and student's recipes), the signal-to-noise ratio, and "
                    "the Performance Gap Recovered with Fieller's interval where the oracle teacher ran"),
    "iterations": ("LLM2LLM round by round: each iteration against the same cells' iteration 0 (their "
                   "fine-tuning), paired within each replicate, by accuracy and the log-likelihood metric"),
    "noise": ("Noise: the spread of one recipe's test accuracy across training replicates, across "
              "seed sets, and the binomial error of its test items"),
    "metrics": ("Low-noise metrics (eval.likelihood): each comparison judged by the papers' "
                "generation accuracy and by log-likelihood scoring of the same test items; a metric "
                "with a higher SNR reaches a verdict with fewer replicates"),
    "metrics_noise": "Each metric's noise, per recipe",
    "recipes": ("Recipes: each setting of a strategy against its plainest (fewest overrides), paired by "
                "replicate, by each metric, with both sides' sd across training replicates and its 95% "
                "interval: choose a recipe by its mean and its noise together"),
    "papers": ("The papers' numbers beside this sweep's (a Δ only where the setting matches the "
               "paper's; n/a: not measured here), one row per teacher; a claim is reproduced only with "
               "a verdict in the paper's direction, and the controls' teachers never reproduce one"),
    "cells": "Every cell",
}


def declared_tables(df: pd.DataFrame) -> dict:
    """{name: title} of the paper-shaped tables the cells' strategies declare: the iterative ones first."""
    declared = df[df.report_table.notna()].sort_values(["iterative", "report_table"], ascending=[False, True])
    return dict(zip(declared.report_table, declared.report_title, strict=True))


def build_declared(df: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """A declared table, shaped by what its strategies are: iterative, or spending a budget."""
    cells = df[df.report_table == name]
    return iterations_table(df, name) if cells.iterative.any() else budget_table(df, name)


def build(records: list[dict], out: Path) -> dict:
    """Write report.md, report.html, the CSVs and the plots into `out`; return {name: table or plot path}."""
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in records if well_formed(r)]
    df = frame(records)
    failed = [r for r in records if r.get("status") == "failed"]
    intro, sections, plots, made = [f"{len(df)} finished cells, {len(failed)} failed."], [], [], {}
    if not df.empty:
        trained, reused = int(df.trainings.sum()), int(df.reused.sum())
        intro[0] += (f" Trainings performed {trained}; stages reused from earlier cells or runs {reused}; "
                     f"teacher queries paid {int(df.queries_paid.sum())}; ${df.cost_usd.sum():.4f}.")
        comparisons_table = comparisons(df)
        metric_verdicts, metric_noise = by_metric(df)
        doubted = int(df.doubts.astype(bool).sum())
        if doubted:
            intro.insert(1, f"**{doubted} of {len(df)} cells are doubted** (marked ! in the tables; the "
                            "cells table's `doubts` column says why): a stage that took under "
                            f"{FEW_STEPS} optimizer steps barely moved its student, and a test split where "
                            f"over {MOSTLY_INVALID:.0%} of generations are no answer at all measures the "
                            "output format, not what the data taught.")
        titles = {**declared_tables(df), **TITLES}
        tables = {**{name: build_declared(df, name) for name in declared_tables(df)},
                  "diversity": diversity_table(df), "cluster_agent": cluster_agent_table(df),
                  "comparisons": comparisons_table, "iterations": iteration_table(df),
                  "noise": noise_table(df), "metrics": metric_verdicts,
                  "metrics_noise": metric_noise, "recipes": recipe_table(df), "papers": paper_table(df),
                  "cells": cells_table(df)}
        one_family(tables)  # q beside every p, over every test of the report
        said = headline(tables["comparisons"], tables, df)
        if said:
            intro.append(said)
        for name, table in tables.items():
            title = titles[name]
            if table is not None:
                table.to_csv(out / f"{name}.csv", index=False)
                sections.append((name, title, table))
                made[name] = table
        for name, plot in (
            ("accuracy_vs_budget_ratio", plot_budget),
            ("accuracy_per_iteration", plot_iterations),
            ("accuracy_vs_diversity", plot_diversity),
        ):
            path = plot(df, out / f"{name}.png")
            if path:
                plots.append((name, path))
                made[name] = path
    parts = ["# Sweep report\n\n" + intro[0], *intro[1:],
             *(f"## {title}\n\n{markdown(table)}" for _, title, table in sections),
             *(f"![{name}]({path.name})" for name, path in plots)]
    if failed:
        failures = "\n".join(f"- `{' '.join(r['overrides'])}`: {r['error']} ({r['run_dir']})" for r in failed)
        parts.append(f"## Failed cells\n\n{failures}")
        failures_table = pd.DataFrame([{"cell": " ".join(r["overrides"]), "error": r["error"],
                                        "run folder": r["run_dir"]} for r in failed])
        sections.append(("failed", "Failed cells", failures_table))
    (out / "report.md").write_text("\n\n".join(parts) + "\n")
    made["report"] = out / "report.md"
    made["html"] = write_html(out, "Sweep report", intro, sections, plots, browser_rows(records, out))
    return made
