"""Which generation strategy to use for a task, seed-set size and teacher query budget:
`python -m runners.advise task=gsm8k seed_size=100 budget=5000 [ratio=BR] [store=DIR,DIR]`.

It looks for measured budget-strategy cells of that task in the results stores (default: the
committed `results/` and the local store, $BENCH_CACHE_DIR or outputs/cache), takes the nearest
measured |S| and then the nearest BR (both on a log scale), and there compares the strategies within
each student, teacher and setting (never pooling them; the controls' teachers are left out), each pair
with the report's verdict (runners/report/verdicts.py). It recommends a strategy only where it beats
every other at p < 0.05 and no setting says otherwise; else it says no strategy beats the others, with
the effect the replicates could have detected. With no measurements for the task it falls back on the
published rule (Chan, Pu et al. 2024; docs/protocols.md §2): answer augmentation at low BR, new
question above the crossover (BR ~ 27-51 for |S| = 100, ~ 17 for |S| >= 1000). Either way it says which
evidence it used."""

import math
import os
import sys
from pathlib import Path

from bench.config import TeacherRole, conf_dir
from bench.store import find_records
from runners.report.compare import HELPS
from runners.report.paper import paper_values
from runners.report.tables import budgeted_cells, frame, well_formed
from runners.report.verdicts import CONTROLS, judged, pooled_noise

USAGE = "usage: python -m runners.advise task=NAME seed_size=N budget=Q (or ratio=BR) [store=DIR,DIR]"


def published_rule(seed_size: int, ratio: float) -> tuple[str, str]:
    """The budget paper's crossover (runners/report/paper_values.yaml): below it the overtaken strategy,
    above it the overtaking one."""
    paper = paper_values()["chan2024_budget"]
    overtaking, overtaken = paper["crossover_of"]
    if seed_size <= 316:  # nearer (log scale) to the paper's |S| = 100 than to 1000
        (low, high), regime = paper["crossover"][100], "|S| = 100"
    else:
        (low, high), regime = paper["crossover"][1000], "|S| = 1000 and full"
    # inside the crossover band the two are close, and the overtaking one gains as BR grows
    choice = overtaken if ratio < low else overtaking
    band = f"BR ~ {low}-{high}" if low != high else f"BR ~ {low}"
    return choice, (
        f"published rule (Chan, Pu et al. 2024): crossover {band} for {regime}; "
        f"BR = {ratio:g} {'is below' if ratio < low else 'is above' if ratio > high else 'is inside'} it"
    )


def nearest(values, target: float) -> float:
    return min(values, key=lambda v: abs(math.log(v) - math.log(target)))


def advise(task: str, seed_size: int, ratio: float, stores: list[Path]) -> str:
    found = [r for store in stores if store.exists() for r in find_records(store) if well_formed(r)]
    records = list({r["cell_id"]: r for r in found}.values())
    df = frame(records)
    measured = budgeted_cells(df) if not df.empty else df
    measured = measured[measured.task == task] if not measured.empty else measured
    lines = [f"task {task}, |S| = {seed_size}, BR = {ratio:g} (Q = {ratio * seed_size:,.0f} queries)"]
    if measured.empty:
        choice, why = published_rule(seed_size, ratio)
        searched = ", ".join(str(s) for s in stores)
        return "\n".join([*lines, f"recommendation: {choice}",
                          f"evidence: no measured budget-strategy cells for {task} in {searched}; {why}"])
    size = nearest(measured.seed_size.unique(), seed_size)
    at_size = measured[measured.seed_size == size]
    near_ratio = nearest(at_size.budget_ratio.unique(), ratio)
    point = at_size[(at_size.budget_ratio == near_ratio) & ~at_size.teacher_role.isin(CONTROLS)]
    lines.append(f"evidence: {len(point)} measured cells at the nearest point, |S| = {size} and BR = "
                 f"{near_ratio:g}, compared within each student, teacher and setting")
    winners = set()
    for (student, teacher, role, setting), cells in point.groupby(["student", "teacher", "teacher_role",
                                                                   "setting"]):
        lines.append(f"  student {student}, teacher {teacher}{f', {setting}' if setting else ''}:")
        for strategy, runs in cells.groupby("strategy").accuracy:
            spread = f" ± {runs.std(ddof=1):.3f}" if len(runs) > 1 else ""
            lines.append(f"    {strategy:<20} accuracy {runs.mean():.3f}{spread}  ({len(runs)} cells)")
        strategies = sorted(cells.strategy.unique())
        noise = pooled_noise(measured[measured.student == student])  # the MDE's noise: every recipe run
        verdicts = {(a, b): judged(cells[cells.strategy == a], cells[cells.strategy == b],
                                   noise=noise and noise[0])
                    for a in strategies for b in strategies if a != b}
        for (a, b), said in verdicts.items():
            if a < b:
                lines.append(f"    {a} vs {b}: {said.verdict}" + (f", p {said.p_value:.3f}"
                                                                   if said.p_value is not None else ""))
        best = [a for a in strategies if all(verdicts[a, b].verdict == HELPS for b in strategies if b != a)]
        if len(strategies) > 1:  # one strategy alone is no evidence either way
            winners.add(best[0] if best else None)
        if role == TeacherRole.simulation:
            lines.append(f"    note: {teacher} is the simulated teacher: it shows the pipeline, not what an "
                         "LLM teacher achieves")
    if len(winners) == 1 and None not in winners:
        lines.insert(1, f"recommendation: {winners.pop()} (it beats every other strategy at p < 0.05 here)")
    else:
        lines.insert(1, "recommendation: none — no strategy beats the others here (can't tell at p < 0.05, "
                        "or the settings disagree); more replicates would narrow the differences shown")
    choice, why = published_rule(seed_size, ratio)
    lines.append(f"for comparison, the {why} -> {choice}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    args = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    unknown = set(args) - {"task", "seed_size", "budget", "ratio", "store"}
    if unknown or "task" not in args or "seed_size" not in args or ("budget" in args) == ("ratio" in args):
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    tasks = sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))
    if args["task"] not in tasks:
        print(f"error: task={args['task']} is not a task of conf/task/: use one of {', '.join(tasks)}",
              file=sys.stderr)
        return 2
    try:
        seed_size = int(args["seed_size"])
        ratio = float(args["ratio"]) if "ratio" in args else float(args["budget"]) / seed_size
        if seed_size <= 0 or not (math.isfinite(ratio) and ratio > 0):
            raise ValueError
    except (ValueError, ZeroDivisionError):
        print("error: seed_size, budget and ratio must be positive finite numbers (e.g. seed_size=100 "
              "budget=5000)", file=sys.stderr)
        return 2
    default = [Path("results"), Path(os.environ.get("BENCH_CACHE_DIR", "outputs/cache"))]
    stores = [Path(p) for p in args["store"].split(",")] if "store" in args else default
    missing = [str(p) for p in stores if not p.is_dir()] if "store" in args else []
    if missing:  # a named store that is not there: say so, never answer as if it had been read
        print(f"error: store={','.join(missing)} is not a folder; name a results store or sweep folder "
              "(e.g. store=results)", file=sys.stderr)
        return 2
    print(advise(args["task"], seed_size, ratio, stores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
