"""The report's tables, shaped like the papers': one row per finished cell (`frame`), then LLM2LLM's
task x |S| table, the budget study's task x |S| x BR table, the diversity scores' correlation with
accuracy, and every cell. Several seeds of one cell are shown as mean ± std (n)."""

import logging
import math

import numpy as np
import pandas as pd

from bench.diversity import DIRECTION
from bench.evaluation import doubts
from bench.model_store import hub_id_of
from bench.store import CELL_ID
from runners.report.stats import correlations

log = logging.getLogger(__name__)
DONE_KEYS = ("config", "metrics", "strategy", "family", "seed_set_size", "stages", "overrides")


def well_formed(record: dict) -> bool:
    """A cell record the report can use: a well-formed id, and what a finished cell holds; others are
    left out with a warning (a hand-made or foreign file, or one from an older version)."""
    if record.get("status") != "done":
        return True  # a failed cell: listed with its error, never written as a result
    missing = [key for key in DONE_KEYS if key not in record]
    if CELL_ID.match(str(record.get("cell_id"))) and not missing:
        return True
    why = f"it lacks {', '.join(missing)}" if missing else "its cell_id is not a cell id"
    log.warning("left out a record from %s: %s", record.get("run_dir", "?"), why)
    return False


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
        rows.append(
            {
                "task": config["task"]["name"],
                "student": config["student"]["name"],
                "teacher": config["teacher"]["name"],
                "teacher_model": hub_id_of((config["teacher"].get("backend") or {}).get("model")
                                           or config["teacher"]["name"]),
                "rounds": config.get("strategy", {}).get("iterations"),
                "scoring": config["task"].get("scoring_decoding") or config.get("eval", {}).get("decoding"),
                "full_seed_set": config["seed_set"].get("size") is None
                and config["seed_set"].get("fraction") is None,
                "strategy": r["strategy"],
                "family": r["family"],
                "variant": r.get("choices", {}).get("strategy", r["strategy"]),
                "seed_size": r["seed_set_size"],
                "seed": config["seed_set"]["seed"],
                "budget_ratio": round(queries / r["seed_set_size"], 2) if queries else None,
                # generation only: the cluster agent's queries (role diversity) are not the strategy's cost
                "teacher_queries": r.get("cost", {}).get("teacher", {}).get("requests", 0),
                "augmenter_queries": r.get("cost", {}).get("augmenter", {}).get("requests", 0),
                "queries_paid": sum(
                    line.get("requests", 0)
                    for role, line in r.get("cost", {}).items()
                    if role not in ("budget", "diversity")
                ),
                "accuracy": metrics["final/test_acc"],
                "stderr": metrics["final/test_acc_stderr"],
                "iterations": [i["test_acc"] for i in r.get("iterations", [])],
                "doubts": cell_doubts(r.get("iterations", [])),
                "seconds": r.get("seconds"),
                "trainings": r["stages"]["trained"],
                "reused": r["stages"]["reused"],
                "cost_usd": sum(
                    line.get("cost_usd", 0) for role, line in r.get("cost", {}).items() if role != "budget"
                ),
                "diversity": r.get("diversity", {}),
                "skipped": r.get("skipped", False),
                "cell": " ".join(r["overrides"]) or "(defaults)",
                "setting": setting_of(r["overrides"]),
                "cell_id": r["cell_id"],
            }
        )
    return pd.DataFrame(rows)


def cell_doubts(iterations: list[dict]) -> str:
    """Why the cell's scores may say little (bench.evaluation.doubts), per stage: 'iteration 0: 3 optimizer
    step(s)'. Records from before these were counted have none."""
    found = []
    for i in iterations:
        if "train_steps" in i:
            why = doubts(i["train_steps"], i.get("test_invalid_share") or 0.0)
            found += [f"iteration {i['iteration']}: {'; '.join(why)}"] if why else []
    return " · ".join(found)


def flag(cells: pd.DataFrame) -> str:
    """' !' after a table value when one of its cells is doubted (the cells table says why)."""
    return " !" if cells.doubts.astype(bool).any() else ""


# keys a table shows as its rows or columns; seed_set.seed is pooled (mean ± std over seeds)
SHOWN = ("task", "seed_set.size", "seed_set.fraction", "seed_set.seed", "budget.ratio", "budget.max_queries",
         "strategy", "student", "teacher", "experiment")


def setting_of(overrides: list[str]) -> str:
    """What else a cell's command line set (strategy.temperature=1.8 ...): cells that differ in it are
    never pooled, only cells that differ in their seed."""
    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")
    return " ".join(sorted(o for o in overrides if key(o) not in SHOWN and not key(o).startswith("hydra")))


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} (n={len(values)})"


def row_keys(df: pd.DataFrame, always: list[str]) -> list[str]:
    """The given keys, plus student, teacher and the rest of the setting when the sweep varied them."""
    return [k for k in ("task", "student", "teacher") if k in always or df[k].nunique() > 1] + \
           [k for k in always if k not in ("task", "student", "teacher")] + \
           (["setting"] if df.setting.nunique() > 1 else [])


def llm2llm_table(df: pd.DataFrame) -> pd.DataFrame | None:
    cells = df[df.family.isin(["finetune", "llm2llm"])]
    if cells.empty or not (cells.family == "llm2llm").any():
        return None
    keys = row_keys(cells, ["task", "seed_size"])
    variants = sorted(cells[cells.family == "llm2llm"].variant.unique())
    rows = []
    for group, block in cells.groupby(keys, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        base = block[block.family == "finetune"].accuracy
        row["finetune"] = mean_std(base) + flag(block[block.family == "finetune"])
        for variant in variants:
            accuracy = block[block.variant == variant].accuracy
            row[variant] = mean_std(accuracy) + flag(block[block.variant == variant])
            gain = accuracy.mean() - base.mean() if len(accuracy) and len(base) else math.nan
            row[f"{variant} gain"] = "" if math.isnan(gain) else f"{100 * gain:+.1f} pts"
        rows.append(row)
    return pd.DataFrame(rows)


def budgeted_cells(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.family == "budgeted") & df.budget_ratio.notna()]


def budget_table(df: pd.DataFrame) -> pd.DataFrame | None:
    cells = budgeted_cells(df)
    if cells.empty:
        return None
    keys = row_keys(cells, ["task", "seed_size", "budget_ratio"])
    strategies = sorted(cells.strategy.unique())
    rows = []
    for group, block in cells.groupby(keys, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        means = {}
        for strategy in strategies:
            accuracy = block[block.strategy == strategy].accuracy
            row[strategy] = mean_std(accuracy) + flag(block[block.strategy == strategy])
            if len(accuracy):
                means[strategy] = accuracy.mean()
        row["best"] = max(means, key=means.get) if means else ""
        same = (df.task == row["task"]) & (df.seed_size == row["seed_size"])
        baseline = df[(df.family == "finetune") & same]
        if len(baseline):  # the sweep's fine-tuning cells: what no teacher gives at this |S|
            row["finetune"] = mean_std(baseline.accuracy) + flag(baseline)
        rows.append(row)
    return pd.DataFrame(rows)


def cells_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell; with its teacher-answer and augmenter queries and the budget ratio either way (the
    budget study leaves open whether the augmenter's queries count against Q)."""
    table = df[["cell", "accuracy", "stderr", "seconds", "trainings", "reused", "teacher_queries",
                "augmenter_queries", "queries_paid", "cost_usd", "skipped", "doubts"]].copy()
    table.insert(8, "BR (teacher answers)", (df.teacher_queries / df.seed_size).map("{:.2f}".format))
    table.insert(9, "BR (all queries)",
                 ((df.teacher_queries + df.augmenter_queries) / df.seed_size).map("{:.2f}".format))
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


DIVERSITY_DATASET = "generated/all"  # the cell's whole generated dataset
MIN_CELLS = 5  # fewer cells than this make no correlation worth a table


def diversity_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Cells x diversity scores of their generated data (cells without generated data left out)."""
    rows = {i: {m: v for m, v in d.get(DIVERSITY_DATASET, {}).items() if m in DIRECTION and v is not None}
            for i, d in df.diversity.items() if isinstance(d, dict)}
    return pd.DataFrame.from_dict({i: r for i, r in rows.items() if r}, orient="index").dropna(
        axis=1, how="all"
    )


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


def cluster_agent_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """The LLM cluster agent's score of each cell's generated data, with how many of its clustering rounds
    were valid (a weak judge's unparseable or truncated rounds are dropped: a score from few rounds says
    little) and the commonest reasons rounds were lost."""
    rows = []
    for i, d in df.diversity.items():
        detail = d.get(DIVERSITY_DATASET, {}).get("cluster_agent_detail") if isinstance(d, dict) else None
        if not detail or "counts" not in detail:
            continue
        counts = detail["counts"]
        rounds = detail["rounds"] + counts.get("dropped_rounds", 0)
        losses = {k: v for k, v in counts.items() if k not in ("dropped_rounds", "repaired_rounds") and v}
        score = detail.get("score")
        rows.append({"cell": df.at[i, "cell"],
                     "score": "" if score is None else f"{score:.2f}" + (
                         f" ± {detail['stderr']:.2f}" if detail.get("stderr") is not None else ""),
                     "valid rounds": f"{detail['rounds']} of {rounds}",
                     "criteria": len(detail.get("criteria") or []),
                     "what was lost": ", ".join(f"{k.replace('_', ' ')} {v}"
                                                for k, v in sorted(losses.items(), key=lambda kv: -kv[1]))})
    return pd.DataFrame(rows) if rows else None

