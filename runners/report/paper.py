"""The papers' numbers beside the sweep's (paper_values.yaml). Each paper value carries the setting it
was measured in; the cells a row draws on are checked against it key by key, and a Δ is printed only
when every key matches. Otherwise the row reads `not comparable: <what differs>`: a tiny student, a
simulated teacher, another scoring or recipe never yields a difference that looks like a finding."""

from pathlib import Path

import pandas as pd
import yaml

from runners.report.compare import CANT_TELL, HELPS
from runners.report.tables import POOLED, budgeted_cells
from runners.report.verdicts import CONTROLS, REPLICATE, judged

VALUES = Path(__file__).with_name("paper_values.yaml")


def paper_values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def differences(cells: pd.DataFrame, setting: dict, task: str | None = None) -> list[str]:
    """What the cells do that the paper did not: ['student_model tiny (paper meta-llama/...)'], or []
    when every key of the setting matches. A key the cells did not record counts as a difference."""
    notes = []
    for key, paper in setting.items():
        if isinstance(paper, dict):
            if task not in paper:
                continue
            paper = paper[task]
        allowed = {shown(v) for v in (paper if isinstance(paper, list) else [paper])}
        ours = sorted({shown(v) for v in cells[key].dropna()}) if key in cells else []
        if not ours:
            notes.append(f"{key} not recorded (paper {' or '.join(sorted(allowed))})")
        elif not set(ours) <= allowed:
            notes.append(f"{key} {', '.join(ours)} (paper {' or '.join(sorted(allowed))})")
    return notes


def verdict(delta: str | None, notes: list[str]) -> str | None:
    """The Δ column: the difference where the setting matches, else why there is none."""
    if delta is None:
        return None
    return f"not comparable: {'; '.join(notes)}" if notes else delta


def claim(verdict_text: str, teacher: str, role: str, direction: float) -> str:
    """Whether a row reproduces the paper's claim: only a verdict in the paper's direction does; the
    controls' teachers (their role: oracle, shuffled labels) bound what a teacher can do and reproduce
    nothing."""
    if role in CONTROLS:
        return f"control ({teacher}): not a reproduction"
    if verdict_text.startswith(CANT_TELL):
        return "not shown (can't tell)"
    agrees = (verdict_text == HELPS) == (direction > 0)
    return "reproduced" if agrees else "contradicted"


def llm2llm_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    """One row per task, teacher and |S|: the claim's strategies (`strategies` in paper_values.yaml) at
    their final iteration against their baseline on the same seed sets, paired by replicate (the baseline's
    runs counted once, however many teachers share them)."""
    rows = []
    for task, points in paper["gain_points"].items():
        ours_all = df[(df.task == task) & df.variant.isin(paper["strategies"])]
        base_all = df[(df.task == task) & df.strategy.isin(ours_all.baseline.dropna().unique())]
        notes = differences(pd.concat([base_all, ours_all]), paper["setting"], task)
        quantity = f"{task}: {paper['quantity']}"
        found = []
        for (size, teacher), ours in ours_all.groupby(["seed_size", "teacher"]):
            base = base_all[base_all.seed_size == size].drop_duplicates(subset=REPLICATE)
            if len(base):
                gain = judged(ours, base)
                found.append(row(paper["study"], f"{quantity} (|S| {size}, teacher {teacher})",
                                 paper["source"],
                                 f"{points:+.1f}", f"{100 * gain.diff:+.1f}",
                                 verdict(f"{100 * gain.diff - points:+.1f}", notes),
                                 claim(gain.verdict, teacher, ours.teacher_role.iloc[0], points), gain))
        rows += found or [row(paper["study"], quantity, paper["source"], f"{points:+.1f}", None, None)]
    return rows


def crossover(cells: pd.DataFrame, overtaking: str, overtaken: str
              ) -> tuple[float | None, float | None] | str | None:
    """Where strategy `overtaking` (the budget paper's New Question) overtakes `overtaken` (Answer
    Augmentation) on the grid, from a verdict at each BR (the one against the other, paired by
    replicate), never from means alone: between the last BR where `overtaken` is ahead (hurts) and the
    first after it where `overtaking` is (helps); (None, BR) when `overtaking` is ahead from the first BR
    that reaches a verdict; (BR, None) when it is not ahead after `overtaken` last was; "can't tell" when
    no BR reaches a verdict; None without both strategies at one BR. Pool one budget reading only."""
    decided, both = [], False
    for ratio, at in cells.groupby("budget_ratio"):
        new, answer = at[at.strategy == overtaking], at[at.strategy == overtaken]
        if len(new) and len(answer):
            both = True
            said = judged(new, answer).verdict
            if not said.startswith(CANT_TELL):
                decided.append((float(ratio), said == HELPS))
    if not both:
        return None
    if not decided:
        return CANT_TELL
    last_behind = max((i for i, (_, ahead) in enumerate(decided) if not ahead), default=-1)
    overtaken = [ratio for ratio, ahead in decided[last_behind + 1:] if ahead]
    if last_behind == -1:
        return None, decided[0][0]
    return decided[last_behind][0], overtaken[0] if overtaken else None


def interval_text(interval: tuple[float | None, float | None] | str | None) -> str | None:
    if interval is None:
        return None
    if interval == CANT_TELL:
        return "can't tell where (no BR reaches a verdict)"
    low, high = interval
    if low is None:
        return f"≤ {high:g}"  # New Question ahead from the first grid point
    if high is None:
        return f"> {low:g}"  # never overtook on the grid
    return f"{low:g}–{high:g}"


def interval_delta(interval: tuple[float | None, float | None], low: float, high: float) -> str:
    """How far the measured crossover interval lies from the paper's range: 0 where they overlap."""
    ours_low, ours_high = interval
    if ours_high is not None and ours_high < low:
        return f"{ours_high - low:+g}"
    if ours_low is not None and ours_low >= high:
        return f"{ours_low - high:+g}"
    return "+0 (overlaps)"


def budget_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    """One row per |S| and reading of the budget (augmenter queries counted against Q or not): the
    crossover of the two readings is not pooled, since the same BR buys different data under each."""
    rows, budgeted = [], budgeted_cells(df)
    readings = sorted(budgeted.count_augmenter.dropna().unique()) if len(budgeted) else []
    for size, (low, high) in paper["crossover"].items():
        of_size = budgeted[budgeted.full_seed_set] if size == "full" else \
            budgeted[(budgeted.seed_size == int(size)) & ~budgeted.full_seed_set]
        for reading in readings or [None]:
            cells = of_size if reading is None else of_size[of_size.count_augmenter == reading]
            interval = crossover(cells, *paper["crossover_of"]) if len(cells) else None
            label = "" if reading is None else \
                f", augmenter queries {'counted' if reading else 'not counted'} in Q"
            delta = None if interval in (None, CANT_TELL) else interval_delta(interval, low, high)
            rows.append(row(paper["study"], f"seed set {size}{label}: {paper['quantity']}", paper["source"],
                            f"{low:g}" if low == high else f"{low:g}–{high:g}", interval_text(interval),
                            verdict(delta, differences(cells, paper["setting"]))))
    return rows


def diversity_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    """The sign of the cluster-agent score's correlation with the paper's quantity (the mean zero-shot
    accuracy after SFT), pooled over the sweep's cells as the paper pools its corpora."""
    from runners.report.tables import diversity_table

    table = diversity_table(df) if "diversity" in df else None
    found = table[(table.score == "cluster_agent") & (table.target == "zero-shot mean after SFT")] \
        if table is not None else []
    if len(found) > 1:  # several tasks: the pooled row, as the paper pools its corpora
        found = found[found.task == POOLED]
    if not len(found):
        return [row("diversity", paper["quantity"], paper["source"], paper["correlation_sign"], None, None)]
    rho = float(found.spearman.iloc[0])
    agrees = (rho > 0) == (paper["correlation_sign"] == "positive")
    notes = differences(df[df.uses_teacher], paper["setting"])
    return [row("diversity", paper["quantity"], paper["source"], paper["correlation_sign"],
                f"Spearman {rho:+.2f}", verdict("same sign" if agrees else "opposite sign", notes))]


TEMPLATE_NAMES = {"real_only": "real data only", "cosmopedia_v0.1": "Cosmopedia v0.1",
                  "cosmopedia_v0.2": "Cosmopedia v0.2", "topic": "Topic", "topic_styles": "Topic Styles",
                  "topic_styles_persona": "Topic Styles Persona",
                  "multi_topic_styles_persona": "Multi-Topic Styles Persona"}


def zero_shot_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    """Table 7: per student, stage and data template, the paper's average zero-shot accuracy beside the
    sweep's pre-training cells of the same template (any student: the Δ only where every setting
    matches)."""
    rows = []
    corpora = df[df.pretrains]
    for student, stages in paper["accuracy"].items():
        for stage, column in (("pretrained", "zero_shot_pretrained"), ("sft", "zero_shot_sft")):
            for template, value in stages[stage].items():
                cells = corpora[(corpora.data_template == template) & corpora[column].notna()]
                ours = 100 * cells[column].mean() if len(cells) else None
                setting = {**paper["setting"], "student_model": student, "data_template": template}
                when = "after SFT" if stage == "sft" else "pre-trained"
                label = f"{student.split('_')[0].upper()} {when}, {TEMPLATE_NAMES[template]}"
                rows.append(row("diversity (Table 7)", f"{label}: {paper['quantity']}", paper["source"],
                                f"{value:.2f}", None if ours is None else f"{ours:.2f} ({len(cells)} cells)",
                                verdict(None if ours is None else f"{ours - value:+.2f}",
                                        differences(cells, setting))))
    return rows


def sensitivity_rows(df: pd.DataFrame, paper: dict) -> list[dict]:
    """Table 10: the cluster-agent score as K, N, the pipeline's steps or the judge vary, beside the
    sweep's scores at the same value. Never a Δ: D depends on the data scored, and the paper scored its
    own pre-training corpora."""
    rows, scored = [], df[df.cluster_score.notna()] if "cluster_score" in df else df.iloc[0:0]
    for varied, values in paper["rows"].items():
        for value, (mean, sd) in values.items():
            cells = scored
            if varied in ("cluster_K", "cluster_N"):
                cells = scored[scored[varied] == value]
            elif varied == "judge_model":
                cells = scored[scored.judge_model.astype(str).str.contains(str(value), regex=False)]
            elif varied == "pipeline":
                cells = scored.iloc[0:0] if value == "clustering only" else \
                    scored[scored.cluster_verify == (value == "whole pipeline")]
            ours = cells.cluster_score
            reproduced = None if ours.empty else (f"{ours.mean():.2f}" + (
                f" ± {ours.std(ddof=1):.2f}" if len(ours) > 1 else "") + f" ({len(ours)} cells)")
            base = paper["base"]
            others = (f"K = {base['cluster_K']}, N = {base['cluster_N']}, verification "
                      f"{'on' if base['cluster_verify'] else 'off'}, {base['judge_model']} judging")
            rows.append(row("diversity (Table 10)", f"{varied.replace('cluster_', '')} = {value}: "
                            f"{paper['quantity']}; the others at {others}", paper["source"],
                            f"{mean:.2f} ± {sd:.2f}", reproduced,
                            None if reproduced is None else "not comparable: D depends on the data scored "
                            "(the paper's: its own pre-training corpora)"))
    return rows


def row(study, quantity, source, paper, reproduced, delta, claimed: str = "n/a", tested=None) -> dict:
    """A papers-table row; `tested`, the Comparison behind a claim, gives its verdict and p."""
    return {"study": study, "quantity": quantity, "paper": paper, "reproduced": reproduced or "n/a",
            "Δ": delta or "n/a", "claim": claimed, "verdict": tested.verdict if tested else "",
            "p": "" if tested is None or tested.p_value is None else f"{tested.p_value:.3f}",
            "p_raw": tested.p_value if tested else None, "source": source}


def paper_table(df: pd.DataFrame) -> pd.DataFrame:
    paper = paper_values()
    rows = llm2llm_rows(df, paper["lee2024_llm2llm"]) + budget_rows(df, paper["chan2024_budget"]) \
        + diversity_rows(df, paper["chen2024_diversity"])
    # the diversity study's own tables, in a report of its cells (pre-training corpora, cluster-agent scores)
    if df.pretrains.any() or ("cluster_score" in df and df.cluster_score.notna().any()):
        rows += zero_shot_rows(df, paper["chen2024_zero_shot"]) + \
            sensitivity_rows(df, paper["chen2024_sensitivity"])
    return pd.DataFrame(rows)
