"""Every comparison a sweep allows, each with its verdict (runners/report/compare.py), the controls'
Performance Gap Recovered, and the noise they are judged against:

- each LLM2LLM variant and each budgeted strategy against fine-tuning at the same task, student, |S|
  and setting (fine-tuning trains no teacher data, so any teacher's cells share it);
- the budgeted strategies against each other at the same budget ratio and teacher;
- PGR = (strategy - fine-tuning) / (oracle - fine-tuning) where the same strategy also ran with the
  perfect teacher (`teacher=oracle`): how much of what real data would add the strategy's teacher adds.

Replicates pair up by (seed_set.seed, replicate): the same seed set and training replicate on both
sides."""

import math

import pandas as pd
from scipy import stats

from runners.report.compare import CANT_TELL, compare, gap_recovered

ORACLE = "oracle"  # the positive control: conf/teacher/oracle.yaml
SHUFFLED = "shuffled_labels"  # the negative control: conf/teacher/shuffled_labels.yaml
REPLICATE = ["seed", "replicate"]  # what pairs two cells' replicates


def pairs(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[int, int]]:
    """Positions (in a, in b) of the replicates both sides ran."""
    where = {key: j for j, key in enumerate(zip(*(b[k] for k in REPLICATE), strict=True))}
    return [(i, where[key]) for i, key in enumerate(zip(*(a[k] for k in REPLICATE), strict=True))
            if key in where]


# what a comparison can be judged by: the papers' generation accuracy, and eval.likelihood's low-noise
# metrics (the likeliest label's accuracy; the gold's log-likelihood), each with how its differences print
METRICS = {"accuracy": (100.0, "pts"), "choice_acc": (100.0, "pts"), "likelihood": (1.0, "nats")}


def judged(a: pd.DataFrame, b: pd.DataFrame, metric: str = "accuracy"):
    """A's cells against B's cells: paired by replicate where they pair, else unpaired."""
    scale, unit = METRICS[metric]
    return compare(a[metric].to_numpy(dtype=float), b[metric].to_numpy(dtype=float), pairs(a, b) or None,
                   scale=scale, unit=unit)


def arm(block: pd.DataFrame, teachers: bool) -> str:
    """How a side of a comparison is named: the variant, and its teacher where teachers vary."""
    variant, teacher = block.variant.iloc[0], block.teacher.iloc[0]
    return f"{variant} ({teacher})" if teachers and block.family.iloc[0] != "finetune" else variant


GROUP = ["task", "student", "seed_size", "setting"]


def comparisons(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame | None:
    """One row per comparison: who against whom, where, and the verdict's columns, by `metric`."""
    if df.empty:
        return None
    teachers = df[df.family != "finetune"].teacher.nunique() > 1
    rows = []
    for group, cells in df.groupby(GROUP, sort=True, dropna=False):
        where = dict(zip(GROUP, group, strict=True))
        # fine-tuning asks no teacher: a grid over teachers runs it once per teacher, the same cell
        baseline = cells[cells.family == "finetune"].drop_duplicates(subset=REPLICATE)
        generating = cells[cells.family.isin(["llm2llm", "budgeted"])]
        for (ratio, teacher, variant), arm_cells in generating.groupby(
                [generating.budget_ratio.fillna(-1), "teacher", "variant"], sort=True):
            br = None if ratio == -1 else ratio
            if len(baseline):
                row = {**where, "budget_ratio": br, "A": arm(arm_cells, teachers), "B": "finetune",
                       **judged(arm_cells, baseline, metric).row()}
                oracle = generating[(generating.variant == variant) & (generating.teacher == ORACLE)
                                    & (generating.budget_ratio.fillna(-1) == ratio)]
                if teacher not in (ORACLE, SHUFFLED) and len(oracle):  # a real teacher's share of the gap
                    row["PGR"] = recovered(arm_cells[metric], baseline[metric], oracle[metric])
                rows.append(row)
        budgeted = generating[generating.family == "budgeted"]
        for (ratio, teacher), at_ratio in budgeted.groupby(["budget_ratio", "teacher"], sort=True):
            strategies = sorted(at_ratio.variant.unique())
            for i, first in enumerate(strategies):
                for second in strategies[i + 1:]:
                    a, b = at_ratio[at_ratio.variant == first], at_ratio[at_ratio.variant == second]
                    rows.append({**where, "budget_ratio": ratio, "A": arm(a, teachers), "B": arm(b, teachers),
                                 **judged(a, b, metric).row()})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    if "PGR" in table:
        table["PGR"] = table.PGR.fillna("")
    table.insert(table.columns.get_loc("p") + 1, "q (BH)", false_discovery(table.p))
    keep = [c for c in table.columns if not (c in ("setting", "budget_ratio", "student")
                                             and table[c].nunique(dropna=True) <= 1)]
    return table[keep]


def false_discovery(p_values: pd.Series) -> pd.Series:
    """Benjamini-Hochberg q-values over a table's comparisons (scipy): a report makes many comparisons,
    and at p < 0.05 one in twenty true nulls reads "helps" or "hurts"; q < 0.05 holds the share of false
    verdicts among those claimed at 5%."""
    p = pd.to_numeric(p_values, errors="coerce")
    q = pd.Series("", index=p.index, dtype=object)
    if p.notna().any():
        q[p.notna()] = [f"{v:.3f}" for v in stats.false_discovery_control(p[p.notna()], method="bh")]
    return q


def recovered(strategy: pd.Series, baseline: pd.Series, oracle: pd.Series) -> str:
    point, low, high = gap_recovered(strategy, baseline, oracle)
    if point is None:
        return "n/a (the oracle adds nothing)"
    return f"{point:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else " (too few replicates)")


def headline(table: pd.DataFrame | None) -> str | None:
    """The line at the top of a report: what the grid can detect, from its positive control where it
    has one (teacher=oracle against fine-tuning), else from its comparisons' minimum detectable effects."""
    if table is None or table.empty:
        return None
    mde = pd.to_numeric(table["MDE (pts)"], errors="coerce")
    control = table[table.A.str.contains(f"({ORACLE})", regex=False) & (table.B == "finetune")]
    undecided = table.verdict.str.startswith(CANT_TELL)
    said = (f"**{int((~undecided).sum())} of {len(table)} comparisons reach a verdict** (helps or hurts at "
            f"p < 0.05 over paired replicates)")
    if (~undecided).any():
        q = pd.to_numeric(table["q (BH)"], errors="coerce")
        said += (f"; at q < 0.05 (Benjamini-Hochberg: the false-discovery rate held at 5% over all "
                 f"{len(table)}): {int((q < 0.05).sum())} of the {int((~undecided).sum())}")
    if len(control) and control.verdict.str.startswith(CANT_TELL).all():
        below = pd.to_numeric(control["MDE (pts)"], errors="coerce").max()
        said += (". **This grid cannot detect even its positive control** (the same strategy with a "
                 "perfect teacher): " + (f"it cannot tell a strategy's effect below {below:.1f} points"
                                         if pd.notna(below) else "one replicate tells nothing")
                 + "; add replicates (replicate=0,1,2,...) or lower the noise (docs/reports.md)")
    elif mde.notna().any():
        said += f"; with these replicates, effects below {mde.min():.1f}-{mde.max():.1f} points are invisible"
    elif (table.n <= 1).all():
        said += "; every cell ran once, so none can (sweep replicate=0,1,2)"
    return said + "."


NOISE_KEYS = ["task", "student", "variant", "teacher", "seed_size", "budget_ratio", "setting"]


def replicate_sd(cells: pd.DataFrame, metric: str = "accuracy") -> tuple[float, float, float] | None:
    """The sd across training replicates of one seed set, pooled over the seed sets (df = cells − seed
    sets), with its 95% chi-square interval: at 3 replicates an sd is known only to within a factor of
    ~6, so two recipes' noise differ measurably only when their intervals part."""
    groups = [c[metric] for _, c in cells.groupby("seed") if len(c) > 1]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return None
    sd = math.sqrt(sum(g.var(ddof=1) * (len(g) - 1) for g in groups) / dof)
    low, high = (sd * math.sqrt(dof / stats.chi2.ppf(q, dof)) for q in (0.975, 0.025))
    return sd, low, high


def noise_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame | None:
    """Per recipe (task x student x strategy x teacher x |S| x BR): the spread of `metric` across
    training replicates (same seed set), across seed-set draws, and (accuracy) the binomial error of one
    cell's test items; only where a recipe ran more than once."""
    df = df[df[metric].notna()].assign(accuracy=df[metric])  # the spread below is of this metric
    df = df.assign(teacher=df.teacher.where(df.family != "finetune", "-"))  # fine-tuning asks none
    df = df.drop_duplicates(subset=[*NOISE_KEYS, *REPLICATE])
    rows = []
    for group, cells in df.groupby(NOISE_KEYS, sort=True, dropna=False):
        if len(cells) < 2:
            continue
        row = dict(zip(NOISE_KEYS, group, strict=True))
        within = replicate_sd(cells)
        per_draw = cells.groupby("seed").accuracy.mean()
        row.update({
            "cells": len(cells), "mean": f"{cells.accuracy.mean():.3f}",
            "sd across training replicates": f"{within[0]:.3f}" if within else "",
            "its 95% interval": f"[{within[1]:.3f}, {within[2]:.3f}]" if within else "",
            "sd across seed sets": f"{per_draw.std(ddof=1):.3f}" if len(per_draw) > 1 else "",
            "sd of all runs": f"{cells.accuracy.std(ddof=1):.3f}",
            "binomial error (test items)": f"{cells.stderr.mean():.3f}" if metric == "accuracy" else "",
        })
        rows.append(row)
    if not rows:
        return None
    table = pd.DataFrame(rows)
    keep = [c for c in table.columns if not (c in ("setting", "budget_ratio", "student", "teacher")
                                             and table[c].nunique(dropna=True) <= 1)]
    return table[keep]


def metric_name(df: pd.DataFrame, metric: str) -> str:
    if metric == "likelihood":
        return str(df.likelihood_metric.dropna().iloc[0])
    return {"accuracy": "generation accuracy (the papers')", "choice_acc": "likeliest-label accuracy"}[metric]


def by_metric(df: pd.DataFrame) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Where cells were also scored by log-likelihood (eval.likelihood): every comparison judged by each
    metric side by side, and each metric's noise, so a reader sees which metric reaches a verdict."""
    scored = df[df.likelihood.notna()] if "likelihood" in df else df.iloc[0:0]
    if scored.empty:
        return None, None
    verdicts, noise = [], []
    for metric in METRICS:
        if scored[metric].isna().all():
            continue
        name = metric_name(scored, metric)
        table = comparisons(scored, metric)
        if table is not None:
            table = table.rename(columns=lambda c: c.split(" (")[0] if c.startswith(("Δ", "MDE")) else c)
            verdicts.append(table.drop(columns=["PGR"], errors="ignore").assign(metric=name))
        spread = noise_table(scored, metric)
        if spread is not None:
            noise.append(spread.drop(columns=["binomial error (test items)"]).assign(metric=name))
    return (pd.concat(verdicts, ignore_index=True) if verdicts else None,
            pd.concat(noise, ignore_index=True) if noise else None)


def iteration_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """LLM2LLM round by round: each iteration against the same cells' iteration 0 (their fine-tuning
    stage), paired within each replicate, by accuracy and (where scored) the log-likelihood metric. The
    final iteration is what the papers compare; an earlier one can gain where the last has lost it."""
    cells = df[(df.family == "llm2llm") & (df.iterations.str.len() > 1)]
    rows = []
    for group, block in cells.groupby(["task", "student", "seed_size", "teacher", "variant"], sort=True):
        where = dict(zip(["task", "student", "seed_size", "teacher", "variant"], group, strict=True))
        for k in range(1, int(block.iterations.str.len().max())):
            reached = block[block.iterations.str.len() > k]
            for metric, column in (("accuracy", "iterations"), ("likelihood", "iteration_likelihoods")):
                values = reached[column].tolist()
                if any(v[k] is None or v[0] is None for v in values):
                    continue
                scale, unit = METRICS[metric]
                judged_k = compare([v[k] for v in values], [v[0] for v in values],
                                   [(i, i) for i in range(len(values))], scale=scale, unit=unit)
                name = metric_name(reached, metric) if metric == "likelihood" else "accuracy"
                row = judged_k.row()
                rows.append({**where, "iteration": k, "metric": name, "n": row["n"],
                             "Δ vs iteration 0": row[f"Δ ({unit})"] + f" {unit}",
                             **{c: row[c] for c in ("95% interval", "p", "verdict", "SNR")}})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    keep = [c for c in table.columns if not (c == "student" and table[c].nunique() <= 1)]
    return table[keep]


RECIPE = ["task", "student", "variant", "teacher", "seed_size", "budget_ratio"]


def recipe_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """Where one strategy ran under several settings (a training recipe, a test-set size), each with
    replicates: every setting against the plainest one (the fewest overrides), paired by replicate, by each
    metric scored, with both sides' noise, so a recipe is chosen by its mean and its noise together."""
    df = df.assign(teacher=df.teacher.where(df.family != "finetune", "-"))
    rows = []
    for group, block in df.groupby(RECIPE, sort=True, dropna=False):
        settings = {s: c for s, c in block.groupby("setting") if len(c) > 1}
        if len(settings) < 2:
            continue
        base = min(settings, key=lambda s: (len(s.split()), s))
        plain = settings[base]
        for setting, cells in settings.items():
            if setting == base:
                continue
            for metric in METRICS:
                if cells[metric].isna().any() or plain[metric].isna().any():
                    continue
                row = judged(cells, plain, metric).row()
                unit = METRICS[metric][1]
                rows.append({**dict(zip(RECIPE, group, strict=True)), "A": setting, "B": base or "(none)",
                             "metric": metric_name(cells, metric), "n": row["n"],
                             "mean A": f"{cells[metric].mean():.3f}", "mean B": f"{plain[metric].mean():.3f}",
                             "Δ": row[f"Δ ({unit})"] + f" {unit}",
                             **{c: row[c] for c in ("95% interval", "p", "verdict")},
                             "sd A": sd_with_interval(replicate_sd(cells, metric)),
                             "sd B": sd_with_interval(replicate_sd(plain, metric))})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    keep = [c for c in table.columns if not (c in ("student", "teacher", "budget_ratio")
                                             and table[c].nunique(dropna=True) <= 1)]
    return table[keep]


def sd_with_interval(sd: tuple | None) -> str:
    return f"{sd[0]:.3f} [{sd[1]:.3f}, {sd[2]:.3f}]" if sd else ""
