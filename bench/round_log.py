"""What a job has done so far, round by round: each training stage, what the teacher generated before it
and the stage's zero-shot scores. Every addition is logged to the tracker and `iterations.json` is
rewritten at once, so a job that fails later keeps what it did."""

import logging
from pathlib import Path

from bench.evaluation import likelihood_metrics
from bench.records import RoundRecord
from bench.store import write_json, write_jsonl
from bench.tracking import Tracker

log = logging.getLogger(__name__)


class RoundLog:
    def __init__(self, run_dir: Path, tracker: Tracker):
        self.run_dir, self.tracker = run_dir, tracker
        self.rounds: list = []  # bench/stages.py Round, in the order they were trained
        self.generated: dict = {}  # iteration -> counts of what happened to its requests
        self.generated_examples: dict = {}  # iteration -> the examples it added
        self.zero_shots: dict = {}  # iteration -> {task: {metric: value}}

    def add_round(self, stage, examples: int) -> None:
        test, scored, stats = stage.test, stage.scored, stage.stats
        self.tracker.log_predictions(stage.iteration, "test", test.records)
        if scored:
            self.tracker.log_predictions(stage.iteration, "train", scored.records)
        self.tracker.log_iteration(stage.iteration, {
            "test/acc": test.accuracy, "test/acc_stderr": test.stderr, "test/examples": len(test.records),
            "train/examples": examples, "train/mean_loss": stats.train_loss,
            "train/seconds": stats.seconds, "train/tokens_per_second": stats.tokens_per_second,
            "train/steps": stats.steps, "test/invalid_share": test.invalid_share,
            "train/padding_share": stats.padding_share, "stage/reused": int(stage.reused),
            **({"train/averaged_steps": stats.averaged_steps} if stats.averaged_steps else {}),
            **({"train/scored_acc": scored.accuracy} if scored else {}),
            **({"test/acc_greedy": stage.greedy.accuracy} if stage.greedy else {}),
            **likelihood_metrics("test", stage.likelihood)})
        for earlier in self.rounds:  # trained on in place by a later stage, or reloadable from the store
            earlier.model = None
        self.rounds.append(stage)
        self.write()

    def add_generated(self, iteration: int, generated: list, tally, label: str) -> None:
        """A round's generated examples (JSONL, loadable with `datasets`) and what was dropped."""
        where = self.run_dir / "generated" / f"iteration_{iteration}.jsonl"
        write_jsonl(where, (g.record() for g in generated))
        # every dropped reply with its reason, beside the kept ones (runners/export.py, the report's browser)
        write_jsonl(where.with_name(f"dropped_{iteration}.jsonl"),
                    ({"iteration": iteration, **drop} for drop in tally.drops))
        self.generated[iteration] = dict(tally.counts)
        self.generated_examples[iteration] = [g.example for g in generated]
        log.info(f"{label}teacher: " + ", ".join(f"{n:,} {name.replace('_', ' ')}"
                                                  for name, n in tally.counts.items()))
        self.tracker.log_iteration(iteration, {f"generation/{name}": n for name, n in tally.counts.items()})
        self.tracker.log_table(iteration, "generated/examples", [g.record() for g in generated])

    def add_zero_shot(self, iteration: int, scores: dict) -> None:
        self.zero_shots[iteration] = scores
        self.write()
        self.tracker.log_iteration(iteration, {f"zero_shot/{task}/{metric}": value
                                               for task, metrics in scores.items()
                                               for metric, value in metrics.items()})

    def records(self) -> list[RoundRecord]:
        return [RoundRecord.of(r, self.generated.get(r.iteration, {}), self.zero_shots.get(r.iteration, {}))
                for r in self.rounds]

    def write(self) -> None:
        write_json(self.run_dir / "iterations.json", [vars(r) for r in self.records()])

    def datasets(self) -> dict:
        """Each round's generated examples and, over several rounds, all of them together."""
        rounds = {f"generated/iteration_{k}": v for k, v in sorted(self.generated_examples.items()) if v}
        if len(rounds) <= 1:
            return {"generated/all": next(iter(rounds.values()))} if rounds else {}
        return {**rounds, "generated/all": [e for v in rounds.values() for e in v]}
