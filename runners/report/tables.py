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
from bench.records import CellRecord, RoundRecord
from bench.store import CELL_ID
from bench.strategies import report_roles
from runners.report.compare import HELPS
from runners.report.stats import correlations
from runners.report.verdicts import REPLICATE, judged, noise_by_task

log = logging.getLogger(__name__)


def well_formed(record: dict) -> bool:
    """A cell record the report can use: a well-formed id, and what a finished cell holds; others are
    left out with a warning (a hand-made or foreign file, or one from an older version)."""
    if record.get("status") != "done":
        return True  # a failed cell: listed with its error, never written as a result
    missing = [key for key in CellRecord.DONE if key not in record]
    if CELL_ID.match(str(record.get("cell_id"))) and not missing:
        return True
    why = f"it lacks {', '.join(missing)}" if missing else "its cell_id is not a cell id"
    log.warning("left out a record from %s: %s", record.get("run_dir", "?"), why)
    return False


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per finished cell (skipped cells count: they hold an earlier run's result)."""
    return pd.DataFrame([row_of(r) for r in map(CellRecord.from_dict, records) if r.done])


def row_of(r: CellRecord) -> dict:
    """A finished cell's row of the frame."""
    config, metrics, cost, iterations = r.config, r.metrics, r.cost or {}, r.iterations or []
    capped = [b for b in cost.get("budget", []) if b.get("max_queries")]
    queries = capped[0]["max_queries"] if capped else None
    return {
        "task": config["task"]["name"],
        "student": config["student"]["name"],
        "teacher": config["teacher"]["name"],
        "teacher_model": hub_id_of((config["teacher"].get("backend") or {}).get("model")
                                   or config["teacher"]["name"]),
        "rounds": config.get("strategy", {}).get("iterations"),
        **setting_columns(config, queries, r.seed_set_size),
        "full_seed_set": config["seed_set"].get("size") is None
        and config["seed_set"].get("fraction") is None,
        "strategy": r.strategy,
        # what its class declares: the baseline it is judged against, its rivals, its tables
        **report_roles((config.get("strategy") or {}).get("_target_"), r.strategy),
        "teacher_role": config["teacher"].get("role", "teacher"),
        "variant": r.choices.get("strategy", r.strategy),
        "seed_size": r.seed_set_size,
        "seed": config["seed_set"]["seed"],
        "replicate": config.get("replicate", 0),
        "budget_ratio": round(queries / r.seed_set_size, 2) if queries else None,
        # generation only: the cluster agent's queries (role diversity) are not the strategy's cost
        "teacher_queries": cost.get("teacher", {}).get("requests", 0),
        "augmenter_queries": cost.get("augmenter", {}).get("requests", 0),
        "queries_paid": sum(line.get("requests", 0) for role, line in cost.items()
                            if role not in ("budget", "diversity")),
        "accuracy": metrics["final/test_acc"],
        "stderr": metrics["final/test_acc_stderr"],
        "iterations": [i.test_acc for i in iterations],
        # eval.likelihood's low-noise metrics of the final stage (NaN where not scored)
        "choice_acc": iterations[-1].test_choice_acc if iterations else None,
        "likelihood": iterations[-1].test_likelihood if iterations else None,
        "likelihood_metric": iterations[-1].likelihood_metric if iterations else None,
        "iteration_likelihoods": [i.test_likelihood for i in iterations],
        "iteration_stderrs": [i.test_acc_stderr or 0.0 for i in iterations],
        # the diversity paper's target: the mean zero-shot accuracy over lm-eval's tasks, after
        # pre-training (iteration 0) and after SFT (iteration 1)
        "zero_shot_pretrained": r.zero_shot_mean(0),
        "zero_shot_sft": r.zero_shot_mean(1),
        "doubts": cell_doubts(iterations),
        "seconds": r.seconds,
        "trainings": r.stages["trained"],
        "reused": r.stages["reused"],
        "cost_usd": sum(line.get("cost_usd", 0) for role, line in cost.items() if role != "budget"),
        "diversity": r.diversity or {},
        "cluster_score": ((r.diversity or {}).get(DIVERSITY_DATASET) or {}).get("cluster_agent"),
        "skipped": bool(r.skipped),
        "cell": " ".join(r.overrides) or "(defaults)",
        "setting": setting_of(r.overrides),
        "cell_id": r.cell_id,
    }


def setting_columns(config: dict, queries: int | None, seed_size: int) -> dict:
    """What a paper value's setting is checked against (runners/report/paper.py): the models, the seed
    set's form, the recipe, the scoring, the budget's reading and whether its cap bound, the judge."""
    task, train, evaluation = config["task"], config.get("train") or {}, config.get("eval") or {}
    strategy = config.get("strategy") or {}
    student, budget = config["student"], config.get("budget") or {}
    decoding = task.get("scoring_decoding") or evaluation.get("decoding")
    if decoding == "sampled":
        sampling = evaluation.get("sampling") or {}
        scoring = (f"sampled T={sampling.get('temperature'):g} top-p {sampling.get('top_p'):g}, "
                   f"{sampling.get('max_new_tokens')} new tokens") if sampling else "sampled"
    else:
        scoring = f"{decoding}, {task.get('max_new_tokens')} new tokens" if decoding else None
    seed_set = config["seed_set"]
    agent = ((config.get("diversity") or {}).get("cluster_agent") or {})
    judge = (agent.get("teacher") or config["teacher"]) if agent.get("enabled") else None
    nominal = budget.get("ratio", 0) * seed_size if budget.get("ratio") else None
    return {
        "student_model": hub_id_of(student["pretrained"]) if student.get("pretrained") else student["name"],
        "seed_form": "fraction" if seed_set.get("fraction") is not None else
                     "size" if seed_set.get("size") is not None else "full",
        "recipe": (f"lr {train['learning_rate']:g}, batch {train['effective_batch_size']}, "
                   f"{train['epochs']:g} epochs") if train else None,
        "decoding": decoding,
        "scoring": scoring,
        "count_augmenter": budget.get("count_augmenter") if queries else None,
        "budget_capped": bool(queries and nominal and queries < nominal) if queries else None,
        "judge_model": hub_id_of((judge.get("backend") or {}).get("model") or judge.get("name"))
        if judge else None,
        # the diversity paper's settings (runners/report/paper_values.yaml, Tables 7 and 10)
        "cluster_K": agent.get("clustering_samples") if judge else None,
        "cluster_N": agent.get("clustering_rounds") if judge else None,
        "cluster_verify": agent.get("verify") if judge else None,
        "zero_shot_tasks": ",".join(sorted(strategy.get("zero_shot_tasks") or [])) or None,
        "data_template": data_template(strategy),
    }


def data_template(strategy: dict) -> str | None:
    """A pre-training corpus's generation template in the diversity paper's names (Table 7): topics
    alone, with styles, with styles and personas; real data only when no generated text is mixed in."""
    if "styles" not in strategy:
        return None  # not a pre-training corpus
    if (strategy.get("real_share") or 0) >= 1:
        return "real_only"
    if not strategy.get("styles"):
        return "topic"
    return "topic_styles_persona" if strategy.get("personas") else "topic_styles"


def cell_doubts(iterations: list[RoundRecord]) -> str:
    """Why the cell's scores may say little (bench.evaluation.doubts), per stage: 'iteration 0: 3 optimizer
    step(s)'. Records from before these were counted have none."""
    found = []
    for i in iterations:
        if i.train_steps is not None:
            why = doubts(i.train_steps, i.test_invalid_share or 0.0)
            found += [f"iteration {i.iteration}: {'; '.join(why)}"] if why else []
    return " · ".join(found)


def flag(cells: pd.DataFrame) -> str:
    """' !' after a table value when one of its cells is doubted (the cells table says why)."""
    return " !" if cells.doubts.astype(bool).any() else ""


# keys a table shows as its rows or columns; seed_set.seed and replicate are pooled (mean ± std over them)
SHOWN = ("task", "seed_set.size", "seed_set.fraction", "seed_set.seed", "budget.ratio", "budget.max_queries",
         "strategy", "student", "teacher", "experiment", "replicate", "replicate_over")


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


def iterations_table(df: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """The final iteration of the iterative strategies whose cells form table `name`, beside their
    baseline, per task and |S| (LLM2LLM's Table 1 shape), with each variant's gain and verdict."""
    iterative = df[df.iterative & (df.report_table == name)]
    if iterative.empty:
        return None
    baselines = sorted(iterative.baseline.dropna().unique())
    cells = df[df.index.isin(iterative.index) | df.strategy.isin(baselines)]
    keys = row_keys(cells, ["task", "seed_size"])
    variants = sorted(iterative.variant.unique())
    noise = noise_by_task(df, "accuracy")  # the comparisons table's MDE noise
    rows = []
    for group, block in cells.groupby(keys, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        for baseline in baselines:
            base = block[block.strategy == baseline]
            row[baseline] = mean_std(base.accuracy) + flag(base)
        for variant in variants:
            ours = block[block.variant == variant]
            row[variant] = mean_std(ours.accuracy) + flag(ours)
            base = block[block.strategy == (ours.baseline.iloc[0] if len(ours) else None)]
            if len(ours) and len(base):
                sd = noise.get((block.task.iloc[0], block.student.iloc[0]))
                verdict = judged(ours, base, noise=sd and sd[0])
                row[f"{variant} gain"] = f"{100 * verdict.diff:+.1f} pts: {verdict.verdict}"
                row[f"p_raw:{variant} gain"] = verdict.p_value  # its q: verdicts.one_family
        rows.append(row)
    return pd.DataFrame(rows)


def budgeted_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The cells of strategies that spend a query budget, where one was set."""
    return df[df.spends_budget & df.budget_ratio.notna()]


Z_95 = 1.96  # a single cell's 95% binomial interval over its test items


def half_interval(accuracies: pd.Series, stderrs: pd.Series) -> float:
    """Half the 95% interval of a mean accuracy: Student's t over seeds and replicates when there are
    several (with 2-3 of them 1.96 would be far too narrow), else the single cell's binomial interval."""
    from scipy import stats

    if len(accuracies) > 1:
        n = len(accuracies)
        return float(stats.t.ppf(0.975, n - 1) * accuracies.std(ddof=1) / math.sqrt(n))
    return Z_95 * float(stderrs.iloc[0])


def best_of(block: pd.DataFrame, strategies: list[str], noise: dict) -> tuple[str, float | None]:
    """The strategy with the highest mean, where it beats the runner-up in a paired t-test over the
    replicates at 5% (runners/report/compare.py), else why not; and that test's p."""
    means = {s: block[block.strategy == s].accuracy.mean() for s in strategies if (block.strategy == s).any()}
    if len(means) < 2:
        return "", None
    first, second = sorted(means, key=lambda s: -means[s])[:2]
    sd = noise.get((block.task.iloc[0], block.student.iloc[0]))
    test = judged(block[block.strategy == first], block[block.strategy == second], noise=sd and sd[0])
    return (first if test.verdict == HELPS else f"none ({test.verdict} over {second})"), test.p_value


def budget_table(df: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """Accuracy per strategy over BR, per task and |S|, of the cells that form table `name`, the best
    strategy with its test, and the baseline's accuracy beside them."""
    cells = budgeted_cells(df)
    cells = cells[cells.report_table == name]
    if cells.empty:
        return None
    keys = row_keys(cells, ["task", "seed_size", "budget_ratio"])
    strategies = sorted(cells.strategy.unique())
    noise = noise_by_task(df, "accuracy")  # the comparisons table's MDE noise
    rows = []
    for group, block in cells.groupby(keys, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        for strategy in strategies:
            accuracy = block[block.strategy == strategy].accuracy
            row[strategy] = mean_std(accuracy) + flag(block[block.strategy == strategy])
        best = "best (paired t-test, 5%)"
        row[best], row[f"p_raw:{best}"] = best_of(block, strategies, noise)  # its q: verdicts.one_family
        if block.budget_capped.fillna(False).astype(bool).any():  # several nominal BRs, one Q
            row["budget_ratio"] = f"{row['budget_ratio']:g} (capped: budget.cap)"
        same = (df.task == row["task"]) & (df.seed_size == row["seed_size"])
        for base in sorted(block.baseline.dropna().unique()):  # what no teacher gives at this |S|
            # a baseline asks no teacher: a grid over teachers runs each replicate once per teacher
            baseline = df[(df.strategy == base) & same].drop_duplicates(subset=REPLICATE)
            if len(baseline):
                row[base] = mean_std(baseline.accuracy) + flag(baseline)
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
    lines += ["| " + " | ".join(shown(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def shown(value) -> str:
    """A table cell: blank where there is no value (fine-tuning's budget ratio), never 'nan'."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


DIVERSITY_DATASET = "generated/all"  # the cell's whole generated dataset
MIN_CELLS = 5  # fewer cells than this make no correlation worth a table


def diversity_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Cells x diversity scores of their generated data (cells without generated data left out)."""
    rows = {i: {m: v for m, v in d.get(DIVERSITY_DATASET, {}).items() if m in DIRECTION and v is not None}
            for i, d in df.diversity.items() if isinstance(d, dict)}
    return pd.DataFrame.from_dict({i: r for i, r in rows.items() if r}, orient="index").dropna(
        axis=1, how="all"
    )


TARGETS = {"zero_shot_sft": "zero-shot mean after SFT",  # the diversity paper's quantity
           "zero_shot_pretrained": "zero-shot mean after pre-training",
           "accuracy": "task test accuracy"}
POOLED = "all tasks (pooled)"


DESIGN_POINT = ["task", "student", "variant", "teacher", "seed_size", "budget_ratio", "setting", "seed"]


def design_points(cells: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The cells' targets and diversity scores averaged over training replicates: one row per design
    point (everything but the replicate), with its task."""
    numeric = cells[list(TARGETS)].apply(pd.to_numeric, errors="coerce")
    frame = pd.concat([cells[DESIGN_POINT].map(str), numeric, scores], axis=1)  # None a key too
    return frame.groupby(DESIGN_POINT, sort=False).mean().reset_index()  # in cell order, as before


def diversity_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """Each diversity score's correlation across cells with what the data did for the student: the mean
    zero-shot accuracy after SFT and after pre-training (the diversity paper's quantities, where the
    cells were scored zero-shot), and the task's test accuracy; per task, and pooled over tasks as a
    labelled extra when the sweep has several. Ranked by |Spearman| within each target. A cell's
    training replicates are one point (their means): replicates of one generated set are not independent
    draws of the correlation, and counting them as cells would narrow its interval falsely."""
    scores = diversity_scores(df)
    if len(scores) < MIN_CELLS:
        return None
    points = design_points(df.loc[scores.index], scores)
    tasks = sorted(points.task.unique())
    groups = [(task, points.index[points.task == task]) for task in tasks]
    if len(tasks) > 1:
        groups.append((POOLED, points.index))
    rows = []
    for column, target in TARGETS.items():
        for task, cells in groups:
            y = pd.to_numeric(points.loc[cells, column], errors="coerce").to_numpy(dtype=float)
            for metric in scores.columns:
                x = points.loc[cells, metric].to_numpy(dtype=float)
                keep = ~np.isnan(x) & ~np.isnan(y)
                if keep.sum() < MIN_CELLS or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
                    continue
                c = correlations(x[keep], y[keep])
                rows.append({"target": target, "task": task, "score": metric,
                             "more diverse is": {1: "higher", -1: "lower", 0: "-"}[DIRECTION[metric]],
                             "cells": int(keep.sum()), "spearman": round(c["spearman"][0], 3),
                             "spearman 95% CI": f"[{c['spearman'][1]:.2f}, {c['spearman'][2]:.2f}]",
                             "pearson": round(c["pearson"][0], 3),
                             "pearson 95% CI": f"[{c['pearson'][1]:.2f}, {c['pearson'][2]:.2f}]"})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    order = {target: i for i, target in enumerate(TARGETS.values())}
    table = table.assign(_target=table.target.map(order), _strength=-table.spearman.abs())
    table = table.sort_values(["_target", "task", "_strength"]).drop(columns=["_target", "_strength"])
    table.insert(0, "rank", table.groupby(["target", "task"]).cumcount() + 1)
    return table.reset_index(drop=True)


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

