"""Tables and plots from the cell records of a sweep, shaped like the papers' tables:
`python -m runners.report <sweep dir> [--out DIR]` (it also runs at the end of every multirun).

- LLM2LLM (Lee et al., Table 1): rows task x |S|, columns finetune, each LLM2LLM variant and its gain;
- budget strategies (Chan, Pu et al.): accuracy per strategy over the budget ratio BR, for each |S|;
- diversity: each diversity score of the cells' generated data against their accuracy (Spearman and
  Pearson with bootstrap intervals, a scatter per score), ranked by how well it predicts accuracy;
- every cell: its overrides, accuracy, time, trainings and teacher cost.
Several seeds (seed_set.seed) of one cell are shown as mean ± std. Writes report.md, one CSV per
table and PNG plots into DIR (default <sweep dir>/report)."""

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.diversity import DIRECTION
from bench.store import digest, find_records, write_json

BUDGETED = ("answer_augmentation", "question_rephrase", "new_question")


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per finished cell (skipped cells count: they hold an earlier run's result)."""
    rows = []
    for r in records:
        if r.get("status") != "done":
            continue
        config, metrics = r["config"], r["metrics"]
        budgets = r.get("cost", {}).get("budget", [])
        capped = [b for b in budgets if b.get("max_queries")]
        queries = capped[0]["max_queries"] if capped else None
        rows.append({
            "task": config["task"]["name"], "student": config["student"]["name"],
            "teacher": config["teacher"]["name"], "strategy": r["strategy"],
            "variant": r.get("choices", {}).get("strategy", r["strategy"]),
            "seed_size": r["seed_set_size"], "seed": config["seed_set"]["seed"],
            "budget_ratio": round(queries / r["seed_set_size"], 2) if queries else None,
            # generation only: the cluster agent's own queries (role diversity) are not the strategy's cost
            "queries_paid": sum(line.get("requests", 0) for role, line in r.get("cost", {}).items()
                                if role not in ("budget", "diversity")),
            "accuracy": metrics["final/test_acc"],
            "stderr": metrics["final/test_acc_stderr"],
            "iterations": [i["test_acc"] for i in r.get("iterations", [])],
            "seconds": r.get("seconds"), "trainings": r["stages"]["trained"], "reused": r["stages"]["reused"],
            "cost_usd": sum(line.get("cost_usd", 0) for role, line in r.get("cost", {}).items() if role != "budget"),
            "diversity": r.get("diversity", {}),
            "skipped": r.get("skipped", False), "cell": " ".join(r["overrides"]) or "(defaults)",
            "cell_id": r["cell_id"],
        })
    return pd.DataFrame(rows)


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} (n={len(values)})"


def row_keys(df: pd.DataFrame, always: list[str]) -> list[str]:
    """The given keys, plus student and teacher when the sweep varied them."""
    return [k for k in ("task", "student", "teacher") if k in always or df[k].nunique() > 1] + \
           [k for k in always if k not in ("task", "student", "teacher")]


def llm2llm_table(df: pd.DataFrame) -> pd.DataFrame | None:
    cells = df[df.strategy.isin(["finetune", "llm2llm"])]
    if cells.empty or not (cells.strategy == "llm2llm").any():
        return None
    keys = row_keys(cells, ["task", "seed_size"])
    variants = sorted(cells[cells.strategy == "llm2llm"].variant.unique())
    rows = []
    for group, block in cells.groupby(keys, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        base = block[block.strategy == "finetune"].accuracy
        row["finetune"] = mean_std(base)
        for variant in variants:
            accuracy = block[block.variant == variant].accuracy
            row[variant] = mean_std(accuracy)
            gain = accuracy.mean() - base.mean() if len(accuracy) and len(base) else math.nan
            row[f"{variant} gain"] = "" if math.isnan(gain) else f"{100 * gain:+.1f} pts"
        rows.append(row)
    return pd.DataFrame(rows)


def budgeted_cells(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.strategy.isin(BUDGETED) & df.budget_ratio.notna()]


def budget_table(df: pd.DataFrame) -> pd.DataFrame | None:
    cells = budgeted_cells(df)
    if cells.empty:
        return None
    keys = row_keys(cells, ["task", "seed_size", "budget_ratio"])
    strategies = [s for s in BUDGETED if s in set(cells.strategy)]
    rows = []
    for group, block in cells.groupby(keys, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        means = {}
        for strategy in strategies:
            accuracy = block[block.strategy == strategy].accuracy
            row[strategy] = mean_std(accuracy)
            if len(accuracy):
                means[strategy] = accuracy.mean()
        row["best"] = max(means, key=means.get) if means else ""
        rows.append(row)
    return pd.DataFrame(rows)


def cells_table(df: pd.DataFrame) -> pd.DataFrame:
    table = df[["cell", "accuracy", "stderr", "seconds", "trainings", "reused", "queries_paid", "cost_usd",
                "skipped"]].copy()
    table["accuracy"] = table.accuracy.map("{:.3f}".format)
    table["stderr"] = table.stderr.map("{:.3f}".format)
    table["seconds"] = table.seconds.map(lambda s: "" if pd.isna(s) else f"{s:.0f}")
    table["cost_usd"] = table.cost_usd.map("{:.4f}".format)
    return table


def markdown(table: pd.DataFrame) -> str:
    columns = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def panels_figure(rows: int, columns: int, panel_size: tuple):
    """A figure of rows x columns panels, drawn off-screen (matplotlib is imported only to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows), squeeze=False)


def save_figure(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_budget(df: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy over BR (log scale), one line per strategy, one panel per (task, |S|)."""
    cells = budgeted_cells(df)
    if cells.empty:
        return None
    panels = sorted(cells.groupby(["task", "seed_size"]).groups)
    figure, axes = panels_figure(1, len(panels), (4.5, 3.6))
    for axis, (task, size) in zip(axes[0], panels, strict=True):
        block = cells[(cells.task == task) & (cells.seed_size == size)]
        for strategy in BUDGETED:
            points = block[block.strategy == strategy].groupby("budget_ratio").accuracy.agg(["mean", "std"])
            if not points.empty:
                axis.errorbar(points.index, points["mean"], yerr=points["std"].fillna(0), marker="o",
                              capsize=3, label=strategy.replace("_", " "))
        axis.set(xscale="log", xlabel="budget ratio BR = Q / |S|", ylabel="test accuracy",
                 title=f"{task}, |S| = {size}")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(figure, path)


def plot_iterations(df: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy per LLM2LLM iteration (iteration 0 is the finetune baseline), one panel per task."""
    cells = df[df.strategy == "llm2llm"]
    if cells.empty:
        return None
    tasks = sorted(cells.task.unique())
    figure, axes = panels_figure(1, len(tasks), (4.5, 3.6))
    for axis, task in zip(axes[0], tasks, strict=True):
        for (variant, size), block in cells[cells.task == task].groupby(["variant", "seed_size"]):
            longest = max(len(i) for i in block.iterations)  # a run that stopped early is shorter
            curves = pd.DataFrame([i + [np.nan] * (longest - len(i)) for i in block.iterations])
            axis.errorbar(curves.columns, curves.mean(), yerr=curves.std().fillna(0), marker="o", capsize=3,
                          label=f"{variant}, |S| = {size}")
        axis.set(xlabel="iteration", ylabel="test accuracy", title=task)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save_figure(figure, path)


DIVERSITY_DATASET = "generated/all"  # the cell's whole generated dataset
MIN_CELLS = 5  # fewer cells than this make no correlation worth a table


def diversity_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Cells x diversity scores of their generated data (cells without generated data left out)."""
    rows = {i: {m: v for m, v in d.get(DIVERSITY_DATASET, {}).items() if m in DIRECTION and v is not None}
            for i, d in df.diversity.items() if isinstance(d, dict)}
    return pd.DataFrame.from_dict({i: r for i, r in rows.items() if r}, orient="index").dropna(axis=1, how="all")


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks (from 1) along the last axis, tied values sharing their mean rank, as
    scipy.stats.rankdata does (whose import alone would cost a rerun's report seconds)."""
    order = np.argsort(a, axis=-1, kind="stable")
    ordered = np.take_along_axis(a, order, -1)
    n, edge = a.shape[-1], np.ones(a.shape[:-1] + (1,), dtype=bool)
    change = ordered[..., 1:] != ordered[..., :-1]
    position = np.broadcast_to(np.arange(n), a.shape)
    first = np.maximum.accumulate(np.where(np.concatenate([edge, change], -1), position, 0), axis=-1)
    last = np.minimum.accumulate(np.where(np.concatenate([change, edge], -1), position, n - 1)[..., ::-1],
                                 axis=-1)[..., ::-1]
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, -1)
    return ranks


def correlations(x: np.ndarray, y: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Spearman and Pearson of x with y, each with a 95% percentile bootstrap interval over cells."""
    def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # row-wise
        a = a - a.mean(axis=-1, keepdims=True)
        b = b - b.mean(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))

    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    xs, ys = x[index], y[index]
    result = {}
    for name, a, b, boot_a, boot_b in (("pearson", x, y, xs, ys),
                                       ("spearman", average_ranks(x), average_ranks(y), average_ranks(xs),
                                        average_ranks(ys))):
        boot = pearson(boot_a, boot_b)
        boot = boot[~np.isnan(boot)]  # resamples with a constant column have no correlation
        low, high = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
        result[name] = (float(pearson(a, b)), float(low), float(high))
    return result


def diversity_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """Each diversity score's correlation with test accuracy across cells, ranked by |Spearman|: how
    well it predicts what the data does for the student (the cluster-agent paper's comparison)."""
    scores = diversity_scores(df)
    if len(scores) < MIN_CELLS:
        return None
    accuracy = df.loc[scores.index, "accuracy"].to_numpy(dtype=float)
    rows = []
    for metric in scores.columns:
        x = scores[metric].to_numpy(dtype=float)
        keep = ~np.isnan(x)
        if keep.sum() < MIN_CELLS or np.ptp(x[keep]) == 0:
            continue
        c = correlations(x[keep], accuracy[keep])
        direction = {1: "higher", -1: "lower", 0: "-"}[DIRECTION[metric]]
        rows.append({"score": metric, "more diverse is": direction, "cells": int(keep.sum()),
                     "spearman": round(c["spearman"][0], 3),
                     "spearman 95% CI": f"[{c['spearman'][1]:.2f}, {c['spearman'][2]:.2f}]",
                     "pearson": round(c["pearson"][0], 3),
                     "pearson 95% CI": f"[{c['pearson'][1]:.2f}, {c['pearson'][2]:.2f}]"})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    table = table.iloc[table.spearman.abs().sort_values(ascending=False).index].reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def plot_diversity(df: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy against each diversity score, one panel per score, one colour per strategy."""
    scores = diversity_scores(df)
    if len(scores) < MIN_CELLS:
        return None
    columns = 4
    figure, axes = panels_figure(math.ceil(len(scores.columns) / columns), columns, (4, 3.2))
    strategies = df.loc[scores.index, "strategy"]
    for axis, metric in zip(axes.flat, scores.columns):
        for strategy in sorted(strategies.unique()):
            cells = scores.index[strategies == strategy]
            axis.scatter(scores.loc[cells, metric], df.loc[cells, "accuracy"], label=strategy.replace("_", " "), s=18)
        axis.set(xlabel=metric, ylabel="test accuracy")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(scores.columns):]:
        axis.axis("off")
    axes[0][0].legend(fontsize=7)
    return save_figure(figure, path)


def cached_plot(plot, df: pd.DataFrame, path: Path, cache: Path | None) -> Path | None:
    """Draw the plot, or copy it from `cache` when the same cells were drawn before (a rerun of a
    sweep whose cells were all done then costs no drawing)."""
    if cache is None:
        return plot(df, path)
    stored = cache / f"{digest([plot.__name__, df.drop(columns=['skipped']).to_json()])}.png"
    if stored.is_file():
        shutil.copyfile(stored, path)
        return path
    made = plot(df, path)
    if made:
        cache.mkdir(parents=True, exist_ok=True)
        partial = stored.with_suffix(".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, stored)
    return made


def build(records: list[dict], out: Path, plot_cache: Path | None = None) -> dict:
    """Write report.md, the CSVs and the plots into `out`; return {name: table or plot path}.
    `plot_cache`: a folder of plots drawn before, by content."""
    out.mkdir(parents=True, exist_ok=True)
    df = frame(records)
    failed = [r for r in records if r.get("status") == "failed"]
    parts, made = [f"# Sweep report\n\n{len(df)} finished cells, {len(failed)} failed."], {}
    if not df.empty:
        trained, reused = int(df.trainings.sum()), int(df.reused.sum())
        parts[0] += (f" Trainings performed {trained}; stages reused from earlier cells or runs {reused}; "
                     f"teacher queries paid {int(df.queries_paid.sum())}; ${df.cost_usd.sum():.4f}.")
        sections = [("llm2llm", "LLM2LLM: test accuracy, fine-tuning vs LLM2LLM (final iteration)",
                     llm2llm_table(df)),
                    ("budget_strategies", "Budgeted strategies: test accuracy per strategy over BR = Q / |S|",
                     budget_table(df)),
                    ("diversity", ("Diversity of the generated data vs test accuracy: correlation across cells "
                                   "(95% bootstrap intervals), ranked by |Spearman|"), diversity_table(df)),
                    ("cells", "Every cell", cells_table(df))]
        for name, title, table in sections:
            if table is not None:
                table.to_csv(out / f"{name}.csv", index=False)
                parts.append(f"## {title}\n\n{markdown(table)}")
                made[name] = table
        for name, plot in (("accuracy_vs_budget_ratio", plot_budget), ("accuracy_per_iteration", plot_iterations),
                           ("accuracy_vs_diversity", plot_diversity)):
            path = cached_plot(plot, df, out / f"{name}.png", plot_cache)
            if path:
                parts.append(f"![{name}]({path.name})")
                made[name] = path
    if failed:
        parts.append("## Failed cells\n\n" + "\n".join(f"- `{' '.join(r['overrides'])}`: {r['error']} "
                                                       f"({r['run_dir']})" for r in failed))
    (out / "report.md").write_text("\n\n".join(parts) + "\n")
    made["report"] = out / "report.md"
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (outputs/multiruns/...) or any folder of records")
    parser.add_argument("--out", type=Path, help="where to write the report (default <sweep dir>/report); "
                        "the records are copied there too, so the folder is self-contained")
    args = parser.parse_args(argv)
    records = find_records(args.sweep_dir)
    if not records:
        print(f"error: no cell records under {args.sweep_dir}: point at a multirun folder "
              "(outputs/multiruns/<date>) or a results folder", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir / "report"
    if args.out:
        for record in records:
            if record.get("status") == "done":
                write_json(out / "records" / f"{record['cell_id']}.json", record)
    made = build(records, out)
    print((out / "report.md").read_text())
    print(f"report: {made['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
