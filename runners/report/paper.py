"""The papers' numbers beside the sweep's (paper_values.yaml): for each quantity a paper reports,
paper | reproduced | Δ, "n/a" where the sweep measured nothing comparable, and what the sweep's setting
does differently (student, teacher, scoring)."""

from pathlib import Path

import pandas as pd
import yaml

VALUES = Path(__file__).with_name("paper_values.yaml")


def paper_values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def differences(cells: pd.DataFrame, setting: dict, task: str | None = None) -> str:
    """What the cells do that the paper did not: 'student tiny (paper 7b); ...', or '' when they match.
    A per-task setting ({task: value}) is compared for the tasks it names."""
    notes = []
    for key, paper in setting.items():
        if isinstance(paper, dict):
            if task not in paper:
                continue
            paper = paper[task]
        ours = sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in cells[key].dropna()}) \
            if key in cells else []
        if ours and ours != [str(paper)]:
            notes.append(f"{key.replace('_model', '')} {', '.join(ours)} (paper {paper})")
    return "; ".join(notes)


def llm2llm_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    rows = []
    for task, points in paper["gain_points"].items():
        cells = df[(df.task == task) & df.variant.isin(["finetune", "llm2llm", "llm2llm_quick"])]
        gains = []
        for _, block in cells.groupby("seed_size"):
            base = block[block.family == "finetune"].accuracy
            ours = block[block.family == "llm2llm"].accuracy
            if len(base) and len(ours):
                gains.append(100 * (ours.mean() - base.mean()))
        reproduced = max(gains) if gains else None
        rows.append(row("LLM2LLM", f"{task}: {paper['quantity']}", paper["source"], f"{points:+.1f}",
                        None if reproduced is None else f"{reproduced:+.1f}",
                        None if reproduced is None else f"{reproduced - points:+.1f}",
                        differences(cells[cells.family == "llm2llm"], paper["setting"], task)
                        if len(cells) else ""))
    return rows


def crossover(cells: pd.DataFrame) -> float | None:
    """The smallest measured BR at which New Question's mean accuracy reaches Answer Augmentation's."""
    means = cells.groupby(["budget_ratio", "strategy"]).accuracy.mean().unstack()
    if not {"new_question", "answer_augmentation"} <= set(means.columns):
        return None
    reached = means[means.new_question >= means.answer_augmentation].index
    return float(min(reached)) if len(reached) else None


def budget_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    rows = []
    budgeted = df[(df.family == "budgeted") & df.budget_ratio.notna()]
    for size, (low, high) in paper["crossover"].items():
        cells = budgeted[budgeted.full_seed_set] if size == "full" else \
            budgeted[(budgeted.seed_size == int(size)) & ~budgeted.full_seed_set]
        ours = crossover(cells) if len(cells) else None
        shown = f"{low:g}" if low == high else f"{low:g}–{high:g}"
        # Δ: how far outside the paper's range (0 inside it)
        delta = None if ours is None else ours - min(max(ours, low), high)
        rows.append(row("budget", f"seed set {size}: {paper['quantity']}", paper["source"], shown,
                        None if ours is None else f"{ours:g}", None if delta is None else f"{delta:+g}",
                        differences(cells, paper["setting"]) if len(cells) else ""))
    return rows


def diversity_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    """The sign of the cluster-agent score's correlation with accuracy across the sweep's cells."""
    from runners.report.tables import diversity_table

    table = diversity_table(df) if "diversity" in df else None
    found = table[table.score == "cluster_agent"] if table is not None else []
    if not len(found):
        return [row("diversity", paper["quantity"], paper["source"], paper["correlation_sign"], None, None,
                    "")]
    rho = float(found.spearman.iloc[0])
    agrees = (rho > 0) == (paper["correlation_sign"] == "positive")
    return [row("diversity", paper["quantity"], paper["source"], paper["correlation_sign"],
                f"Spearman {rho:+.2f}", "same sign" if agrees else "opposite sign",
                differences(df[df.family != "finetune"], paper["setting"]))]


def row(study, quantity, source, paper, reproduced, delta, differs) -> dict:
    return {"study": study, "quantity": quantity, "paper": paper, "reproduced": reproduced or "n/a",
            "Δ": delta or "n/a", "this sweep differs in": differs, "source": source}


def paper_table(df: pd.DataFrame) -> pd.DataFrame:
    paper = paper_values()
    return pd.DataFrame(llm2llm_rows(df, paper["llm2llm"]) + budget_rows(df, paper["budget"])
                        + diversity_rows(df, paper["diversity"]))
