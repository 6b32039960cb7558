"""The report's plots: accuracy over the budget ratio, per LLM2LLM iteration, and against each diversity
score."""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from runners.report.stats import spearman
from runners.report.tables import MIN_CELLS, budgeted_cells, design_points, diversity_scores, half_interval


def panels_figure(rows: int, columns: int, panel_size: tuple, sharey: bool | str = False):
    """A figure of rows x columns panels, drawn off-screen (matplotlib is imported only to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows), squeeze=False,
                        sharey=sharey)


def save_figure(figure, path: Path) -> Path:
    """PNG (the report shows it) and SVG beside it (for papers and slides)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    # text stays text (editable, searchable); no date and fixed ids: the same cells draw the same file
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "synthbench"}):
        figure.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    plt.close(figure)
    return path


def baseline_accuracy(df: pd.DataFrame, plotted: pd.DataFrame, task: str, size: int) -> float | None:
    """The mean accuracy at (task, |S|) of the baseline the plotted cells' strategies declare (fine-tuning):
    the line a strategy has to beat."""
    baseline = df.strategy.isin(plotted.baseline.dropna().unique())
    cells = df[baseline & (df.task == task) & (df.seed_size == size)]
    return float(cells.accuracy.mean()) if len(cells) else None


def draw_baseline(axis, accuracy: float | None, label: str = "fine-tuning only") -> None:
    if accuracy is not None:
        axis.axhline(accuracy, color="0.35", linestyle="--", linewidth=1, label=label)


def accuracy_axis(axis) -> None:
    """Accuracy on its whole range, 0 to 1: a zoomed axis makes a 2-point gain look steep."""
    axis.set_ylim(0, 1)


def plot_budget(df: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy over BR (log scale, ticks at the measured BRs), one line per strategy (and per setting,
    when the sweep varied one), the fine-tuning baseline dashed; a row of panels per task (one y-axis),
    a panel per |S|; error bars: 95% intervals (interval_95); accuracy from 0 to 1. None when no line has
    two BRs."""
    cells = budgeted_cells(df)
    lines = ["task", "seed_size", "strategy", "setting"]
    if cells.empty or cells.groupby(lines).budget_ratio.nunique().max() < 2:
        return None
    tasks = sorted(cells.task.unique())
    sizes = {task: sorted(cells[cells.task == task].seed_size.unique()) for task in tasks}
    varied = cells.setting.nunique() > 1
    figure, axes = panels_figure(len(tasks), max(map(len, sizes.values())), (4.5, 3.6), sharey="row")
    for row, task in zip(axes, tasks, strict=True):
        for axis in row[len(sizes[task]):]:
            axis.axis("off")
        for axis, size in zip(row, sizes[task]):
            block = cells[(cells.task == task) & (cells.seed_size == size)]
            for (strategy, setting), line in block.groupby(["strategy", "setting"]):
                points = line.groupby("budget_ratio")
                label = strategy.replace("_", " ") + (f", {setting}" if varied else "")
                axis.errorbar(list(points.groups), points.accuracy.mean(),
                              yerr=[half_interval(p.accuracy, p.stderr) for _, p in points], marker="o",
                              capsize=3, label=label)
            draw_baseline(axis, baseline_accuracy(df, cells, task, size))
            ratios = sorted(block.budget_ratio.unique())
            axis.set(xscale="log", xlabel="budget ratio BR = Q / |S|", title=f"{task}, |S| = {size}")
            axis.set_xticks(ratios, [f"{r:g}" for r in ratios])
            axis.minorticks_off()
            accuracy_axis(axis)
            axis.grid(alpha=0.3)
        row[0].set_ylabel("test accuracy")
        row[0].legend(fontsize=8)
    return save_figure(figure, path)


def plot_iterations(df: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy per LLM2LLM iteration (iteration 0 is the model fine-tuned on the seed set alone),
    one panel per task, with the sweep's fine-tuning cells dashed when it has them; error bars: 95%
    intervals (interval_95); accuracy from 0 to 1."""
    cells = df[df.iterative]
    if cells.empty:
        return None
    tasks = sorted(cells.task.unique())
    figure, axes = panels_figure(1, len(tasks), (4.5, 3.6))
    for axis, task in zip(axes[0], tasks, strict=True):
        for (variant, size), block in cells[cells.task == task].groupby(["variant", "seed_size"]):
            longest = max(len(i) for i in block.iterations)  # a run that stopped early is shorter
            curves = pd.DataFrame([i + [np.nan] * (longest - len(i)) for i in block.iterations])
            stderrs = pd.DataFrame([e + [np.nan] * (longest - len(e)) for e in block.iteration_stderrs])
            halves = [half_interval(curves[i].dropna(), stderrs[i].dropna()) for i in curves.columns]
            axis.errorbar(curves.columns, curves.mean(), marker="o", capsize=3, yerr=halves,
                          label=f"{variant}, |S| = {size}")
        for size in sorted(cells[cells.task == task].seed_size.unique()):
            draw_baseline(axis, baseline_accuracy(df, cells, task, size), f"fine-tuning only, |S| = {size}")
        axis.set(xlabel="iteration", ylabel="test accuracy", title=task)
        accuracy_axis(axis)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def plot_diversity(df: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy against each diversity score, one panel per score (one y-axis, 0 to 1), one colour
    per task, Spearman's rho per task in its title (and pooled over tasks, labelled, when several); a
    cell's training replicates are one point, their means (as the diversity table)."""
    scores = diversity_scores(df)
    if len(scores) < MIN_CELLS:
        return None
    points = design_points(df.loc[scores.index], scores)
    columns = min(4, len(scores.columns))
    figure, axes = panels_figure(math.ceil(len(scores.columns) / columns), columns, (4, 3.2), sharey=True)
    tasks = sorted(points.task.unique())
    for axis, metric in zip(axes.flat, scores.columns):
        for task in tasks:
            mine = points[points.task == task]
            axis.scatter(mine[metric], mine.accuracy, label=task, s=18)
        titles = []
        for task in tasks + (["pooled"] if len(tasks) > 1 else []):
            mine = points if task == "pooled" else points[points.task == task]
            x, y = mine[metric].to_numpy(dtype=float), mine.accuracy.to_numpy(dtype=float)
            keep = ~np.isnan(x) & ~np.isnan(y)
            rho = spearman(x[keep], y[keep]) if keep.sum() >= MIN_CELLS and np.ptp(x[keep]) > 0 else None
            name = "" if len(tasks) == 1 else f"{task} "
            titles.append(f"{name}ρ = {rho:+.2f} ({keep.sum()} points)" if rho is not None
                          else f"{name}ρ: n/a ({keep.sum()} points)")
        axis.set(xlabel=metric, title="\n".join(titles))
        accuracy_axis(axis)
        axis.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("test accuracy")
    for axis in list(axes.flat)[len(scores.columns):]:
        axis.axis("off")
    axes[0][0].legend(fontsize=7)
    return save_figure(figure, path)
