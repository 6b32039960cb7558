"""One job, stage by stage: config -> seed set -> generation -> training -> evaluation -> record.
The strategy drives the rounds of generation, training and scoring through the Job (bench/job.py)."""

import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from bench.config import BenchConfig, LoggerConfig
from bench.console import quiet_libraries
from bench.distributed import Ranks
from bench.evaluation import doubts
from bench.job import Job
from bench.secrets import redact
from bench.store import write_json
from bench.teachers import query_budget
from bench.tracking import Tracker
from runners.inputs import Inputs

log = logging.getLogger(__name__)


def run(inputs: Inputs, run_dir: Path, cell: str | None = None, choices: dict | None = None,
        sweep: str | None = None, ranks: Ranks | None = None) -> dict:
    """Run one job on its prepared inputs (runners/inputs.py; `cell` its id, `choices` Hydra's group
    choices); return its record (config, metrics, iterations, cost, stages, timings)."""
    cfg, config, strategy, data, seed_set = (inputs.cfg, inputs.config, inputs.strategy, inputs.data,
                                             inputs.seed_set)
    quiet_libraries()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    started = time.perf_counter()
    write_json(run_dir / "seed_ids.json", [example.id for example in seed_set])
    log.info(f"{config.task.name}: seed set of {len(seed_set):,} from {len(data.train):,} training examples "
             f"({data.source}); {strategy.name} with the {config.student.name} student")

    tracker = Tracker(run_dir, config.logger, {**OmegaConf.to_container(cfg, resolve=True),
                                               "choices": choices or {}, "cell_id": cell},
                      name=f"{config.task.name}-{strategy.name}-{config.student.name}-s{len(seed_set)}",
                      group=sweep, tags=(config.task.name, strategy.name, config.student.name))
    failed, job = True, None
    try:
        tracker.summarize({"data/source": data.source, "data/train_pool": len(data.train),
                           "data/seed_set": len(seed_set),
                           "data/dropped_test_overlap": data.dropped_test_overlap,
                           "test/majority_rate": data.majority_rate})
        # Stages 2-4, as the strategy drives them: generation, training from the base weights, scoring.
        job = Job(config, run_dir, data, seed_set, tracker, ranks)
        job.planned = len(strategy.workload(len(seed_set), query_budget(config.budget, len(seed_set)),
                                            config.budget.count_augmenter).stages)
        if strategy.uses_teacher:  # an unreachable teacher or a refused key stops the job before training
            job.check_teachers(probe=config.teacher.probe)
        job.check_models(generates=strategy.uses_teacher)  # so does a model that is not there
        strategy.run(job)
        diversity = job.score_diversity()
        usage = tracker.log_teachers(*job.teachers_used()) if job.teachers_used() else {}
        final = job.rounds[-1]
        trained = sum(not r.reused for r in job.rounds)
        tracker.summarize(
            {
                "student/parameters": final.parameters,
                "final/test_acc": final.test.accuracy,
                "final/test_acc_stderr": final.test.stderr,
                "final/test_invalid_share": final.test.invalid_share,
                **({"final/test_acc_greedy": final.greedy.accuracy} if final.greedy else {}),
                "stages/trained": trained,
                "stages/reused": len(job.rounds) - trained,
                "job/seconds": time.perf_counter() - started,
            }
        )
        plain_lm_eval = job.save_final() if config.student.save == "final" else None
        tracker.log_dataset(f"generated-{cell or 'data'}", generated_files(run_dir),
                            {"task": config.task.name, "strategy": strategy.name, "cell_id": cell,
                             "added": {i: counts.get("added", 0) for i, counts in job.generated.items()}})
        failed = False
    finally:
        if failed and job is not None and job.teachers_used():
            tracker.log_teachers(*job.teachers_used())  # what was paid for and what failed, kept on failure
        where = tracker.where()
        tracker.finish(failed)
    text = summary(config, strategy.name, data, seed_set, job, usage, tracker.metrics, run_dir, where,
                   plain_lm_eval)
    (run_dir / "summary.txt").write_text(text + "\n")
    if sweep:  # a sweep's console gets one line per cell; its run.log and summary.txt the whole summary
        log.debug("\n" + text)
        log.info(f"cell done: test accuracy {tracker.metrics['final/test_acc']:.3f} after {len(job.rounds)} "
                 f"stage(s), {tracker.metrics['job/seconds']:.0f} s -> {run_dir}")
    else:
        log.info("\n" + text)
    return {
        "strategy": strategy.name,
        "family": strategy.family,
        "seed_set_size": len(seed_set),
        "metrics": tracker.metrics,
        "iterations": [job.round_summary(r) for r in job.rounds],
        "cost": usage,
        "diversity": diversity,
        "stages": {
            "trained": trained,
            "reused": len(job.rounds) - trained,
            "keys": [r.key for r in job.rounds],
        },
    }


def generated_files(run_dir: Path) -> list[Path]:
    """What the teacher wrote: each round's added examples and every answer used."""
    return [*sorted((run_dir / "generated").glob("*.jsonl")),
            *[p for p in [run_dir / "generations.jsonl"] if p.exists()]]


def follow(inputs: Inputs, run_dir: Path, ranks: Ranks) -> None:
    """A rank other than 0: the same seed set and student, no teacher, store or record of its own; it
    trains and scores the stages rank 0 sends (bench/distributed.py)."""
    quiet_libraries()
    tracker = Tracker(run_dir, LoggerConfig(backend="none"), {}, name=f"rank {ranks.rank}")
    Job(inputs.config, run_dir / f"rank_{ranks.rank}", inputs.data, inputs.seed_set, tracker, ranks).follow()


def summary(config: BenchConfig, strategy: str, data, seed_set, job: Job, usage: dict, metrics: dict,
            run_dir: Path, wandb_at: str | None, plain_lm_eval: str | None) -> str:
    """The job's story in a dozen lines (also saved as summary.txt), ending with what to do next."""
    head = [
        ("task", (f"{config.task.name} ({data.source}), train pool {len(data.train):,}, "
                  f"majority class {data.majority_rate:.3f}")),
        ("student", f"{config.student.name}, {metrics['student/parameters'] / 1e6:.1f}M parameters"),
        ("strategy", f"{strategy}, seed set {len(seed_set):,} examples"),
    ]
    width = max(len(name) for name, _ in head)
    lines = [f"{name:<{width}}  {value}" for name, value in head]
    lines.append("\niteration  train examples  added  steps  test accuracy  no answer  train s")
    for r in job.rounds:
        added = job.generated.get(r.iteration, {}).get("added", 0)
        lines.append(f"{r.iteration:>9}  {r.stats.examples:>14,}  {added:>5}  {r.stats.steps:>5}  "
                     f"{r.test.accuracy:.3f} ± {r.test.stderr:.3f}  {r.test.invalid_share:>9.1%}  "
                     f"{r.stats.seconds:>7.0f}"
                     + (f"  greedy {r.greedy.accuracy:.3f}" if r.greedy else "")
                     + ("  (reused: trained by an earlier job)" if r.reused else ""))
    doubtful = {r.iteration: doubts(r.stats.steps, r.test.invalid_share) for r in job.rounds}
    for iteration, why in doubtful.items():
        if why:
            lines.append(f"  ! iteration {iteration}: {'; '.join(why)} (the score says little about the "
                         "data; run.log has the fix)")
    for role, line in usage.items():
        if role != "budget":
            lines.append(
                f"{role}: {line['requests']} queries, {line['cache_hits']} from the cache, "
                f"{line['failed']} failed, {line['over_budget']} over budget, "
                f"{line['prompt_tokens'] + line['completion_tokens']:,} tokens, ${line['cost_usd']:.4f}"
            )
    lines.append(f"\nwall time {metrics['job/seconds']:.0f} s · run folder {run_dir} "
                 "(run.log: the whole job)")
    lines.append("next:")
    if job.generated:
        lines.append(f"  generated data   {run_dir / 'generated'}/iteration_<i>.jsonl; every teacher answer "
                     f"in {run_dir / 'generations.jsonl'}")
    if wandb_at:
        lines.append(f"  W&B run          {wandb_at}")
    if plain_lm_eval:
        lines.append(f"  score it again   {plain_lm_eval}")
    if config.teacher.name == "simulated":
        lines.append("  a real teacher   teacher=smollm2_135m (offline, after python -m "
                     "runners.fetch_models), teacher=openai (OPENAI_API_KEY), teacher=vllm_server or "
                     "teacher=hf; README: Teachers")
    lines.append("  a paper's grid   python -m runners.plan experiment=llm2llm, then python run.py -m "
                 "experiment=llm2llm")
    return "\n".join(lines)
