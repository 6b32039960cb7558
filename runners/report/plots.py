"""The report's plots: accuracy over the budget ratio, per LLM2LLM iteration, and against each diversity
score. A plot whose cells were drawn before is copied from the plot cache instead of drawn again."""

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from bench.store import digest
from runners.report.tables import MIN_CELLS, budgeted_cells, diversity_scores


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
    """Accuracy over BR (log scale), one line per strategy (and per setting, when the sweep varied one),
    one panel per (task, |S|); error bars over seeds only. None when no line has two BRs."""
    cells = budgeted_cells(df)
    lines = ["task", "seed_size", "strategy", "setting"]
    if cells.empty or cells.groupby(lines).budget_ratio.nunique().max() < 2:
        return None
    panels = sorted(cells.groupby(["task", "seed_size"]).groups)
    varied = cells.setting.nunique() > 1
    figure, axes = panels_figure(1, len(panels), (4.5, 3.6))
    for axis, (task, size) in zip(axes[0], panels, strict=True):
        block = cells[(cells.task == task) & (cells.seed_size == size)]
        for (strategy, setting), line in block.groupby(["strategy", "setting"]):
            points = line.groupby("budget_ratio").accuracy.agg(["mean", "std"])
            label = strategy.replace("_", " ") + (f", {setting}" if varied else "")
            axis.errorbar(points.index, points["mean"], yerr=points["std"].fillna(0), marker="o", capsize=3,
                          label=label)
        axis.set(xscale="log", xlabel="budget ratio BR = Q / |S|", ylabel="test accuracy",
                 title=f"{task}, |S| = {size}")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(figure, path)


def plot_iterations(df: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy per LLM2LLM iteration (iteration 0 is the finetune baseline), one panel per task."""
    cells = df[df.family == "llm2llm"]
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
            axis.scatter(
                scores.loc[cells, metric], df.loc[cells, "accuracy"], label=strategy.replace("_", " "), s=18
            )
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
