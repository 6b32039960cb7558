"""One job, stage by stage: config -> seed set -> generation -> training -> evaluation -> record.
The strategy drives the rounds of generation, training and scoring through the Job (bench/job.py)."""

import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from bench.config import LoggerConfig
from bench.console import quiet_libraries
from bench.distributed import Ranks
from bench.evaluation import doubts, likelihood_metrics
from bench.job import Job
from bench.records import CellRecord
from bench.secrets import redact
from bench.stages import Round
from bench.store import write_json, write_jsonl
from bench.teachers import query_budget
from bench.tracking import Tracker
from runners.inputs import Inputs

log = logging.getLogger(__name__)


def run(inputs: Inputs, run_dir: Path, record: CellRecord, ranks: Ranks | None = None) -> CellRecord:
    """Run one job on its prepared inputs (runners/inputs.py) and fill in `record`'s result: metrics,
    iterations, cost, diversity and stages (the caller, runners/cell.py, writes it)."""
    config, strategy, seed_set = inputs.config, inputs.strategy, inputs.seed_set
    started = time.perf_counter()
    tracker = start(inputs, run_dir, record)
    planned = len(strategy.workload(len(seed_set), query_budget(config.budget, len(seed_set)),
                                    config.budget.count_augmenter).stages)
    job, failed, links = None, True, {}
    try:
        job = Job(config, run_dir, inputs.data, seed_set, tracker, ranks, planned)
        job.check(generates=strategy.uses_teacher)  # a missing model, key or server: before any training
        strategy.run(job)  # stages 2-4, as the strategy drives them: generation, training, scoring
        if job.paired_cell:  # its data count came from another cell of the store: the record names it
            record.provenance["paired_cell"] = job.paired_cell
        record.diversity = job.score_diversity()
        record.cost = tracker.log_teachers(*job.teachers.used()) if job.teachers.used() else {}
        trained = sum(not r.reused for r in job.rounds)
        record.stages = {"trained": trained, "reused": len(job.rounds) - trained,
                         "keys": [r.key for r in job.rounds]}
        tracker.summarize(final_metrics(job.rounds[-1], record.stages, time.perf_counter() - started))
        if config.student.save == "final":
            links["score it again"] = job.save_final()
        tracker.log_dataset(f"generated-{record.cell_id or 'data'}", generated_files(run_dir),
                            {"task": config.task.name, "strategy": strategy.name, "cell_id": record.cell_id,
                             "added": {i: counts.get("added", 0) for i, counts in job.log.generated.items()}})
        failed = False
    finally:
        if failed and job is not None and job.teachers.used():
            tracker.log_teachers(*job.teachers.used())  # what was paid for and what failed, kept on failure
        links = {"W&B run": tracker.where(), **links}
        tracker.finish(failed)
    record.strategy, record.family, record.seed_set_size = strategy.name, strategy.family, len(seed_set)
    record.metrics, record.iterations = tracker.metrics, job.log.records()
    report(inputs, record, run_dir, links)
    return record


def start(inputs: Inputs, run_dir: Path, record: CellRecord) -> Tracker:
    """The run folder (its config, redacted, and seed ids) and the tracker, with the data's figures."""
    cfg, config, data, seed_set, strategy = (inputs.cfg, inputs.config, inputs.data, inputs.seed_set,
                                             inputs.strategy)
    quiet_libraries()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    write_json(run_dir / "seed_ids.json", [example.id for example in seed_set])
    # the seed examples themselves: what an export and the report's data browser set beside each
    # generated example
    write_jsonl(run_dir / "seed_set.jsonl", ({"id": e.id, "prompt": e.prompt, "target": e.target,
                                              "label": e.label} for e in seed_set))
    log.info(f"{config.task.name}: seed set of {len(seed_set):,} from {len(data.train):,} training examples "
             f"({data.source}); {strategy.name} with the {config.student.name} student")
    tracker = Tracker(run_dir, config.logger, {**OmegaConf.to_container(cfg, resolve=True),
                                               "choices": record.choices, "cell_id": record.cell_id},
                      name=f"{config.task.name}-{strategy.name}-{config.student.name}-s{len(seed_set)}"
                           + (f"-r{config.replicate}" if config.replicate else ""),
                      # replicates of a sweep share its group; a job type per strategy groups them in the UI
                      group=(record.sweep or {}).get("group"), job_type=strategy.name,
                      tags=(config.task.name, strategy.name, config.student.name, config.teacher.name,
                            f"replicate-{config.replicate}"))
    tracker.summarize({"data/source": data.source, "data/train_pool": len(data.train),
                       "data/seed_set": len(seed_set), "data/dropped_test_overlap": data.dropped_test_overlap,
                       "test/majority_rate": data.majority_rate})
    return tracker


def final_metrics(final: Round, stages: dict, seconds: float) -> dict:
    return {"student/parameters": final.parameters, "final/test_acc": final.test.accuracy,
            "final/test_acc_stderr": final.test.stderr, "final/test_invalid_share": final.test.invalid_share,
            **({"final/test_acc_greedy": final.greedy.accuracy} if final.greedy else {}),
            **likelihood_metrics("final/test", final.likelihood),
            "stages/trained": stages["trained"], "stages/reused": stages["reused"], "job/seconds": seconds}


def report(inputs: Inputs, record: CellRecord, run_dir: Path, links: dict) -> None:
    """The summary on the console and in summary.txt; a sweep's console gets one line per cell."""
    text = summary(inputs, record, run_dir, links)
    (run_dir / "summary.txt").write_text(text + "\n")
    if record.sweep:  # a sweep's run.log and summary.txt keep the whole summary
        log.debug("\n" + text)
        log.info(f"cell done: test accuracy {record.metrics['final/test_acc']:.3f} after "
                 f"{len(record.iterations)} stage(s), {record.metrics['job/seconds']:.0f} s -> {run_dir}")
    else:
        log.info("\n" + text)


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


def summary(inputs: Inputs, record: CellRecord, run_dir: Path, links: dict) -> str:
    """The job's story in a dozen lines (also saved as summary.txt), ending with what to do next."""
    config, data, metrics = inputs.config, inputs.data, record.metrics
    head = [
        ("task", (f"{config.task.name} ({data.source}), train pool {len(data.train):,}, "
                  f"majority class {data.majority_rate:.3f}")),
        ("student", f"{config.student.name}, {metrics['student/parameters'] / 1e6:.1f}M parameters"),
        ("strategy", f"{record.strategy}, seed set {record.seed_set_size:,} examples"),
    ]
    width = max(len(name) for name, _ in head)
    lines = [f"{name:<{width}}  {value}" for name, value in head]
    lines.append("\niteration  train examples  added  steps  test accuracy  no answer  train s")
    for r in record.iterations:
        lines.append(f"{r.iteration:>9}  {r.train_examples:>14,}  {r.added:>5}  {r.train_steps:>5}  "
                     f"{r.test_acc:.3f} ± {r.test_acc_stderr:.3f}  {r.test_invalid_share:>9.1%}  "
                     f"{r.train_seconds:>7.0f}"
                     + (f"  greedy {r.test_acc_greedy:.3f}" if r.test_acc_greedy is not None else "")
                     + (f"  {r.likelihood_metric} {r.test_likelihood:.3f}" if r.likelihood_metric else "")
                     + (f" (top label {r.test_choice_acc:.3f})" if r.test_choice_acc is not None else "")
                     + ("  (reused: trained by an earlier job)" if r.reused else ""))
    for r in record.iterations:
        if why := doubts(r.train_steps, r.test_invalid_share):
            lines.append(f"  ! iteration {r.iteration}: {'; '.join(why)} (the score says little about the "
                         "data; run.log has the fix)")
    for role, line in record.cost.items():
        if role != "budget":
            lines.append(
                f"{role}: {line['requests']} queries, {line['cache_hits']} from the cache, "
                f"{line['failed']} failed, {line['over_budget']} over budget, "
                f"{line['prompt_tokens'] + line['completion_tokens']:,} tokens, ${line['cost_usd']:.4f}"
            )
    lines.append(f"\nwall time {metrics['job/seconds']:.0f} s · run folder {run_dir} "
                 "(run.log: the whole job)")
    lines.append("next:")
    if any(r.generation for r in record.iterations):
        lines.append(f"  generated data   {run_dir / 'generated'}/iteration_<i>.jsonl; every teacher answer "
                     f"in {run_dir / 'generations.jsonl'}")
    lines += [f"  {name:<16} {link}" for name, link in links.items() if link]
    if config.teacher.name == "simulated":
        lines.append("  a real teacher   teacher=smollm2_135m (offline, after python -m "
                     "runners.fetch_models), teacher=openai (OPENAI_API_KEY), teacher=vllm_server or "
                     "teacher=hf; docs/teachers.md")
    lines.append("  a paper's grid   python -m runners.plan experiment=llm2llm, then python run.py -m "
                 "experiment=llm2llm")
    return "\n".join(lines)
