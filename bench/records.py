"""The records a cell leaves, typed: a `RoundRecord` per training stage (`iterations.json`, and the cell
record's `iterations`) and the `CellRecord` (`record.json` in its run folder; `cells/<id>.json` in the
results store once done). They are written here only (`to_dict`) and read back here only (`from_dict`,
which takes records of older versions too, a field they lack left at its default), by the report, the
advisor and a cell that pairs with another of the store (`finished_cell`)."""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.store import CellStore, write_json


def _from_dict(cls, data: dict):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RoundRecord:
    """One training stage: what it trained on, its scores, and what was generated before it."""

    iteration: int
    test_acc: float
    test_acc_stderr: float | None = None
    train_examples: int | None = None
    scored_acc: float | None = None  # the training examples the strategy asked to score (LLM2LLM: S)
    test_acc_greedy: float | None = None  # the test split scored greedily too, when the scoring samples
    test_invalid_share: float | None = None  # older records: not counted
    test_likelihood: float | None = None  # eval.likelihood: the mean per-item log-likelihood score
    likelihood_metric: str | None = None  # its name: label_logprob or solution_logprob
    test_choice_acc: float | None = None  # eval.likelihood on classification: the likeliest label is gold
    train_steps: int | None = None
    train_seconds: float | None = None
    stage: str | None = None  # the stage's content address in the stage store
    reused: bool = False  # trained by an earlier job
    generation: dict = field(default_factory=dict)  # what happened to the requests before this round
    zero_shot: dict = field(default_factory=dict)  # {lm-eval task: {metric: value}}

    @classmethod
    def of(cls, stage, generation: dict, zero_shot: dict) -> "RoundRecord":
        """The record of a stage (bench/stages.py `Round`)."""
        return cls(iteration=stage.iteration, test_acc=stage.test.accuracy, test_acc_stderr=stage.test.stderr,
                   train_examples=stage.stats.examples,
                   scored_acc=stage.scored.accuracy if stage.scored else None,
                   test_acc_greedy=stage.greedy.accuracy if stage.greedy else None,
                   test_invalid_share=stage.test.invalid_share,
                   **(likelihood_fields(stage.likelihood) if stage.likelihood else {}),
                   train_steps=stage.stats.steps,
                   train_seconds=stage.stats.seconds, stage=stage.key, reused=stage.reused,
                   generation=generation, zero_shot=zero_shot)

    @property
    def added(self) -> int:
        return self.generation.get("added", 0)

    def zero_shot_mean(self) -> float | None:
        """The mean of lm-eval's `acc` over the zero-shot tasks the stage was scored on."""
        accuracies = [m["acc"] for m in self.zero_shot.values() if isinstance(m.get("acc"), int | float)]
        return sum(accuracies) / len(accuracies) if accuracies else None

    @classmethod
    def from_dict(cls, data: dict) -> "RoundRecord":
        return _from_dict(cls, data)


def likelihood_fields(result) -> dict:
    return {"test_likelihood": result.value, "likelihood_metric": result.metric,
            "test_choice_acc": result.choice_acc}


@dataclass
class CellRecord:
    """One cell: where and how it ran (always), its result (when done) or its error (when failed)."""

    cell_id: str | None
    run_dir: str
    overrides: list
    choices: dict
    sweep: dict | None = None
    status: str | None = None  # done or failed
    skipped: bool | None = None  # done by an earlier run: its result is the earlier run's
    first_run_dir: str | None = None  # where the skipped cell ran first
    error: str | None = None
    config: dict | None = None  # the resolved config, without the paths that do not change results
    provenance: dict | None = None  # code version, host, start and end, CPU threads
    strategy: str | None = None
    family: str | None = None  # the report's table: finetune, llm2llm, budgeted, pretraining
    seed_set_size: int | None = None
    metrics: dict | None = None  # the run's summary metrics, as W&B has them
    iterations: list[RoundRecord] | None = None
    cost: dict | None = None  # per teacher role, and the budget
    diversity: dict | None = None
    stages: dict | None = None  # trained, reused, keys
    seconds: float | None = None

    DONE = ("config", "metrics", "strategy", "family", "seed_set_size", "stages", "overrides")  # when done
    ALWAYS = ("cell_id", "run_dir", "overrides", "choices", "sweep")  # written even when None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in self.ALWAYS}

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "CellRecord":
        record = _from_dict(cls, {"choices": {}, "overrides": [], "run_dir": "", "cell_id": None, **data})
        if record.iterations is not None:
            # a hand-made record may leave out the iteration: its position says it
            record.iterations = [RoundRecord.from_dict({"iteration": n, **i})
                                 for n, i in enumerate(record.iterations)]
        return record

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def added(self) -> int:
        """How many examples the cell's teacher added over all its rounds."""
        return sum(i.added for i in self.iterations or [])

    def zero_shot_mean(self, iteration: int) -> float | None:
        for i in self.iterations or []:
            if i.iteration == iteration and i.zero_shot:
                return i.zero_shot_mean()
        return None


def finished_cell(store_dir: str, same: dict[str, Any], ran: Callable[[dict], bool]) -> CellRecord | None:
    """The first cell of the results store (it keeps finished cells only) whose config parts in `same`
    (task, seed set, student, ...) are these and whose strategy settings `ran` accepts: the cell another
    pairs with."""
    def canonical(value) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    wanted = {part: canonical(value) for part, value in same.items()}
    for data in CellStore(Path(store_dir)).records():
        record = CellRecord.from_dict(data)
        config = record.config or {}
        if all(canonical(config.get(part)) == value for part, value in wanted.items()) and ran(
                config.get("strategy") or {}):
            return record
    return None
