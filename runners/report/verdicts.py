"""Every comparison a sweep allows, each with its verdict (runners/report/compare.py), the controls'
Performance Gap Recovered, and the noise they are judged against:

- each strategy that declares a baseline (bench/strategies/base.py) against its baseline's cells at the same
  task, student, |S| and setting (a baseline asks no teacher, so any teacher's cells share it);
- the strategies that declare themselves rivals against their family's others at the same budget ratio
  and teacher;
- PGR = (strategy - baseline) / (positive control - baseline) where the same strategy also ran with a
  teacher whose role is the positive control (a perfect teacher, `teacher=oracle`): how much of what real
  data would add the strategy's teacher adds.

Cells are selected by what their strategy class and their teacher declare (the frame's role columns),
never by a name.

Replicates pair up by (seed_set.seed, replicate): the same seed set and training replicate on both
sides."""

import math

import pandas as pd
from scipy import stats

from runners.report.compare import CANT_TELL, compare, gap_recovered

POSITIVE_CONTROL = "positive_control"  # a teacher's declared role (bench/config.py TeacherRole)
CONTROLS = (POSITIVE_CONTROL, "negative_control")
REPLICATE = ["seed", "replicate"]  # what pairs two cells' replicates


def pairs(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[int, int]]:
    """Positions (in a, in b) of the replicates both sides ran."""
    where = {key: j for j, key in enumerate(zip(*(b[k] for k in REPLICATE), strict=True))}
    return [(i, where[key]) for i, key in enumerate(zip(*(a[k] for k in REPLICATE), strict=True))
            if key in where]


# what a comparison can be judged by: the papers' generation accuracy, and eval.likelihood's low-noise
# metrics (the likeliest label's accuracy; the gold's log-likelihood), each with how its differences print
METRICS = {"accuracy": (100.0, "pts"), "choice_acc": (100.0, "pts"), "likelihood": (1.0, "nats")}


def judged(a: pd.DataFrame, b: pd.DataFrame, metric: str = "accuracy", noise: float | None = None):
    """A's cells against B's cells: paired by replicate where they pair, else unpaired; `noise` the
    run-to-run sd the MDE and the SNR use (pooled_noise)."""
    scale, unit = METRICS[metric]
    return compare(a[metric].to_numpy(dtype=float), b[metric].to_numpy(dtype=float), pairs(a, b) or None,
                   scale=scale, unit=unit, noise=noise)


def noise_by_task(df: pd.DataFrame, metric: str) -> dict:
    """{(task, student): pooled_noise of its cells}."""
    return {key: pooled_noise(cells, metric) for key, cells in df.groupby(["task", "student"])}


def pooled_noise(cells: pd.DataFrame, metric: str = "accuracy") -> tuple[float, int] | None:
    """The run-to-run sd of one cell's `metric`, pooled over every recipe (NOISE_KEYS) of `cells` that ran
    more than once, and its degrees of freedom: the noise a power analysis takes for a task and student,
    from more runs than any one comparison has (runners/plan.py reads it from the stores the same way).
    None where no recipe ran twice."""
    cells = cells[cells[metric].notna()]
    cells = cells.assign(teacher=cells.teacher.where(cells.uses_teacher, "-"))
    cells = cells.drop_duplicates(subset=[*NOISE_KEYS, *REPLICATE])
    groups = [g[metric] for _, g in cells.groupby(NOISE_KEYS, dropna=False) if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return None
    return math.sqrt(sum((len(g) - 1) * g.var(ddof=1) for g in groups) / dof), dof


def arm(block: pd.DataFrame, teachers: bool) -> str:
    """How a side of a comparison is named: the variant, and its teacher where teachers vary."""
    variant, teacher = block.variant.iloc[0], block.teacher.iloc[0]
    return f"{variant} ({teacher})" if teachers and block.uses_teacher.iloc[0] else variant


GROUP = ["task", "student", "seed_size", "setting"]


def comparisons(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame | None:
    """One row per comparison: who against whom, where, and the verdict's columns, by `metric`."""
    if df.empty:
        return None
    teachers = df[df.uses_teacher].teacher.nunique() > 1
    noise = noise_by_task(df, metric)
    scale, unit = METRICS[metric]
    rows = []
    for group, cells in df.groupby(GROUP, sort=True, dropna=False):
        where = dict(zip(GROUP, group, strict=True))
        sd = noise.get((where["task"], where["student"]))
        places = 1 if scale >= 10 else 3
        heard = {f"noise sd ({unit})": f"{sd[0] * scale:.{places}f} (df {sd[1]})" if sd else ""}
        judged_arms = cells[cells.baseline.notna()]
        for (ratio, teacher, variant), arm_cells in judged_arms.groupby(
                [judged_arms.budget_ratio.fillna(-1), "teacher", "variant"], sort=True):
            br, name = None if ratio == -1 else ratio, arm_cells.baseline.iloc[0]
            # a baseline asks no teacher: a grid over teachers runs it once per teacher, the same cell
            baseline = cells[cells.strategy == name].drop_duplicates(subset=REPLICATE)
            if len(baseline):
                row = {**where, "budget_ratio": br, "A": arm(arm_cells, teachers), "B": name,
                       **judged(arm_cells, baseline, metric, sd and sd[0]).row(), **heard}
                control = judged_arms[(judged_arms.variant == variant)
                                      & (judged_arms.teacher_role == POSITIVE_CONTROL)
                                      & (judged_arms.budget_ratio.fillna(-1) == ratio)]
                if arm_cells.teacher_role.iloc[0] not in CONTROLS and len(control):  # the gap's share
                    row["PGR"] = recovered(arm_cells, baseline, control, metric)
                rows.append(row)
        rivals = judged_arms[judged_arms.rivals]
        for (_, ratio, teacher), at_ratio in rivals.groupby(["family", "budget_ratio", "teacher"], sort=True):
            strategies = sorted(at_ratio.variant.unique())
            for i, first in enumerate(strategies):
                for second in strategies[i + 1:]:
                    a, b = at_ratio[at_ratio.variant == first], at_ratio[at_ratio.variant == second]
                    rows.append({**where, "budget_ratio": ratio, "A": arm(a, teachers), "B": arm(b, teachers),
                                 **judged(a, b, metric, sd and sd[0]).row(), **heard})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    if "PGR" in table:
        table["PGR"] = table.PGR.fillna("")
    keep = [c for c in table.columns if not (c in ("setting", "budget_ratio", "student")
                                             and table[c].nunique(dropna=True) <= 1)]
    return table[keep]


def one_family(tables: dict) -> int:
    """Benjamini-Hochberg over every verdict the report prints, in every table (scipy, from the unrounded
    p each table keeps in a `p_raw` column, or `p_raw:<column>` for a verdict written in <column>): a
    report makes many tests, and at p < 0.05 one in twenty true nulls reads "helps" or "hurts"; q < 0.05
    holds the share of false verdicts among those claimed, over the whole report. Each table gets its q
    (`q` after `p`, or `<column> q` after <column>) and loses the p_raw columns; returns the family's size."""
    raw = [(name, column) for name, table in tables.items() if table is not None
           for column in table.columns if column == "p_raw" or str(column).startswith("p_raw:")]
    found = [(name, column, index, p) for name, column in raw
             for index, p in pd.to_numeric(tables[name][column], errors="coerce").items() if pd.notna(p)]
    q_values = stats.false_discovery_control([p for *_, p in found], method="bh") if found else []
    for name, column in raw:
        table = tables[name]
        q = pd.Series("", index=table.index, dtype=object)
        for (of, where, index, _), value in zip(found, q_values, strict=True):
            if (of, where) == (name, column):
                q[index] = f"{value:.3f}"
        if column == "p_raw":
            after, label = next((c for c in ("p", "claim") if c in table), table.columns[-2]), "q"
        else:
            after = column.removeprefix("p_raw:")
            label = f"{after} q"
        table.insert(table.columns.get_loc(after) + 1, label, q)
        tables[name] = table.drop(columns=column)
    return len(found)


def recovered(strategy: pd.DataFrame, baseline: pd.DataFrame, oracle: pd.DataFrame, metric: str) -> str:
    # `oracle`: the same strategy's cells with the positive control's teacher
    """PGR with Fieller's interval, over the replicates all three ran (paired) where 2 or more did."""
    in_oracle = dict(pairs(strategy, oracle))
    triples = [(i, j, in_oracle[i]) for i, j in pairs(strategy, baseline) if i in in_oracle]
    if len(triples) >= 2:
        arrays = [side[metric].to_numpy(dtype=float)[list(positions)]
                  for side, positions in zip((strategy, baseline, oracle), zip(*triples), strict=True)]
        point, low, high, established = gap_recovered(*arrays, paired=True)
    else:
        point, low, high, established = gap_recovered(strategy[metric], baseline[metric], oracle[metric])
    if not established:
        return "no gap to recover: the oracle's gain over fine-tuning is can't tell"
    return f"{point:.2f} [{low:.2f}, {high:.2f}]"


def headline(table: pd.DataFrame | None, tables: dict, df: pd.DataFrame) -> str | None:
    """The line at the top of a report: how many of the comparisons reach a verdict, how many verdicts of
    the whole report hold at q < 0.05 (one false-discovery family: every table's tests), and what the grid
    can detect, from its positive control where it has one (teacher=oracle against fine-tuning), else from
    its comparisons' minimum detectable effects."""
    if table is None or table.empty:
        return None
    mde = pd.to_numeric(table["MDE (pts)"], errors="coerce")
    # the rows of a positive control's teacher against a baseline
    controls = df[df.teacher_role == POSITIVE_CONTROL].teacher.unique()
    baselines = df[df.baseline.notna()].baseline.unique()
    control = table[table.A.map(lambda a: any(a.endswith(f"({c})") for c in controls))
                    & table.B.isin(baselines)]
    undecided = table.verdict.str.startswith(CANT_TELL)
    said = (f"**{int((~undecided).sum())} of {len(table)} comparisons reach a verdict** (helps or hurts at "
            f"p < 0.05)")
    # q >= p, so a q under 0.05 is a verdict (helps, hurts, or a best strategy named) that holds
    q_values = [pd.to_numeric(t[c], errors="coerce").dropna() for t in tables.values() if t is not None
                for c in t.columns if c == "q" or str(c).endswith(" q")]
    family = sum(len(q) for q in q_values)
    held = sum(int((q < 0.05).sum()) for q in q_values)
    if family:
        said += (f"; over every test the report prints ({family}, one Benjamini-Hochberg family), "
                 f"{held} verdict{'s hold' if held != 1 else ' holds'} at q < 0.05")
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
    df = df.assign(teacher=df.teacher.where(df.uses_teacher, "-"))  # a baseline asks none
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


UNITLESS = ("Δ", "MDE", "noise sd")  # columns the metrics table shares across metrics of different units


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
            table = table.rename(columns=lambda c: c.split(" (")[0] if c.startswith(UNITLESS) else c)
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
    cells = df[df.iterative & (df.iterations.str.len() > 1)]
    noise = {metric: noise_by_task(df, metric) for metric in ("accuracy", "likelihood")}
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
                sd = noise[metric].get((where["task"], where["student"]))
                judged_k = compare([v[k] for v in values], [v[0] for v in values],
                                   [(i, i) for i in range(len(values))], scale=scale, unit=unit,
                                   noise=sd and sd[0])
                name = metric_name(reached, metric) if metric == "likelihood" else "accuracy"
                row = judged_k.row()
                rows.append({**where, "iteration": k, "metric": name, "n": row["n"],
                             "Δ vs iteration 0": row[f"Δ ({unit})"] + f" {unit}",
                             **{c: row[c] for c in ("95% interval", "p", "p_raw", "verdict", "SNR")}})
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
    noise = {metric: noise_by_task(df, metric) for metric in METRICS}
    df = df.assign(teacher=df.teacher.where(df.uses_teacher, "-"))
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
                sd = noise[metric].get((group[0], group[1]))
                row = judged(cells, plain, metric, sd and sd[0]).row()
                unit = METRICS[metric][1]
                rows.append({**dict(zip(RECIPE, group, strict=True)), "A": setting, "B": base or "(none)",
                             "metric": metric_name(cells, metric), "n": row["n"],
                             "mean A": f"{cells[metric].mean():.3f}", "mean B": f"{plain[metric].mean():.3f}",
                             "Δ": row[f"Δ ({unit})"] + f" {unit}",
                             **{c: row[c] for c in ("95% interval", "p", "p_raw", "verdict")},
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
