"""What every strategy shares: the contract of the job it drives (`StrategyJob`), a generation step's
prompt (bench/steps.py) rendered from its template in conf/prompts/, replies parsed back into examples
(an invalid reply is dropped and counted, never a crash), the filters, and provenance."""

import re
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import jinja2

from bench.config import FiltersConfig, TrainConfig, at_least, check
from bench.errors import BenchError
from bench.steps import Step, structured_fields
from bench.strategies.filters import Filters
from bench.tasks import Example, TaskData, question_of, student_prompt
from bench.teachers import Budget, Request, Teacher

if TYPE_CHECKING:  # the stage side (bench/stages.py) imports torch; a strategy needs only its shape
    from bench.records import CellRecord
    from bench.stages import Round

STRATEGIES: dict[str, type["Strategy"]] = {}  # name -> class, filled as strategy classes are defined
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # prompts verbatim


@dataclass
class Generated:
    example: Example  # as the student will see it
    provenance: dict  # strategy, iteration, source seed id, who wrote what, cache keys

    def record(self) -> dict:
        return {"id": self.example.id, "prompt": self.example.prompt, "target": self.example.target,
                "label": self.example.label, **self.provenance}


@dataclass
class Tally:
    """What happened to the requests of one round: asked, answered, and every reason for a drop; and per
    prompt step, the replies read and those that parsed."""

    counts: Counter = field(default_factory=Counter)
    replies: Counter = field(default_factory=Counter)  # step -> replies read
    parsed: Counter = field(default_factory=Counter)  # step -> replies that parsed
    drops: list = field(default_factory=list)  # one record per dropped reply: generated/dropped_<i>.jsonl

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def drop(self, reason: str, about: "Reply | None" = None, detail: str | None = None, **more) -> None:
        """Count a drop and keep what was dropped and why: the reply, its source example, its cache key."""
        self.counts[reason] += 1
        self.drops.append({"reason": reason, **(about.fields() if about else {}), "detail": detail, **more})


@dataclass(frozen=True)
class Reply:
    """Which reply a drop is about: the step that asked, the seed example it is about, the raw text."""

    step: str
    source_id: str | None
    text: str | None
    cache_key: str | None

    def fields(self) -> dict:
        return {"step": self.step, "source_id": self.source_id, "reply": self.text,
                "cache_key": self.cache_key}

    @classmethod
    def of(cls, step, request, response) -> "Reply":
        return cls(step.name, (request.source or {}).get("id"), response.text if response else None,
                   response.key if response else None)


@dataclass
class Workload:
    """The most a cell can ask for (the grid planner's input, runners/plan.py): per training stage, its
    examples and epochs (None: the recipe's), and the training examples scored after it; the teacher's
    and the augmenter's queries; `tokens`: the tokens of an example of a stage the task's examples do not
    describe (a pre-training corpus), else None."""

    stages: list[tuple[int, float | None]]
    scored: list[int]
    teacher_queries: int = 0
    augmenter_queries: int = 0
    tokens: list[int | None] = field(default_factory=list)


class StrategyJob(Protocol):
    """What a strategy may use of the job it drives (bench/job.py's `Job` is the implementation)."""

    task: TaskData
    seed_set: list[Example]

    @property
    def teacher(self) -> Teacher: ...  # writes answers (and examples)

    @property
    def augmenter(self) -> Teacher: ...  # writes or rewrites questions; the teacher's model by default

    @property
    def budget(self) -> Budget: ...  # the query budget Q the teacher draws on

    @property
    def count_augmenter(self) -> bool: ...  # whether augmenter queries count against Q

    @property
    def recipe(self) -> TrainConfig: ...  # the training recipe (train config)

    def train_and_score(self, examples: list[Example], iteration: int, start_from: "Round | None" = None,
                        score_on: Sequence[Example] = (), keep_weights: bool = False,
                        recipe: TrainConfig | None = None) -> "Round":
        """Train from the base weights (or `start_from`), score the test split and `score_on`."""

    def add_generated(self, iteration: int, generated: list["Generated"], tally: "Tally") -> None:
        """Keep a round's generated examples and what happened to its requests."""

    def finished_cell(self, strategy: "Strategy") -> "CellRecord | None":
        """The finished cell of the results store that ran `strategy` on this cell's task, seed set,
        student, recipe, teacher and budget (a cell that pairs with another, as an ablation)."""

    def zero_shot(
        self, stage: "Round", tasks: list[str], include_path: str | None, limit: int | None
    ) -> dict:
        """lm-eval's own tasks on a stage's model."""


@dataclass(kw_only=True)
class Strategy(ABC):
    """Produces training data for the student. `run(job)` drives the rounds: it asks the job to train and
    score, and hands it what it generated.

    A strategy is its own contract (docs/strategies.md, "Adding a strategy"): its settings are its
    dataclass fields (the YAML under conf/strategy/ sets only what differs from their defaults; their
    ranges are checked in `check`), and the class attributes below say what the report and the export make
    of its cells. Defining a subclass with a `name` registers it (`STRATEGIES`)."""

    name: ClassVar[str] = "strategy"  # strategy=<name> on the command line, conf/strategy/<name>.yaml
    family: ClassVar[str] = "strategy"  # strategies of one family share a table and are rivals (below)
    uses_teacher: ClassVar[bool] = True  # the job checks the teachers (and probes a remote one) first
    # the strategy whose cells (same task, student, |S| and setting) every cell of this one is judged
    # against; None: this one is a baseline
    baseline: ClassVar[str | None] = "finetune"
    rivals: ClassVar[bool] = False  # judged against its family's other strategies at one budget ratio
    spends_budget: ClassVar[bool] = False  # its cells spend a query budget Q (the budget tables and plots)
    iterative: ClassVar[bool] = False  # its cells' stages are rounds (the iterations table and plot)
    pretrains: ClassVar[bool] = False  # its first stage pre-trains on a corpus (the diversity paper's table)
    # the table its cells form in the report, shaped like its paper's (iterative: final iteration against
    # the baseline per task and |S|; spends_budget: accuracy per strategy over BR): its name and title
    report_table: ClassVar[tuple[str, str] | None] = None
    # what its generated rows carry beyond the shared provenance: the export keeps these columns
    extra_fields: ClassVar[tuple[str, ...]] = ()

    prompts: dict[str, Any] = field(default_factory=dict)  # per generation step: conf/prompts/
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    temperature: float = 1.0
    max_tokens: int = 512
    personas: int = 0  # >0: each request's writer takes one of the first N voices of persona_pool
    persona_pool: list[str] = field(default_factory=list)
    # false: a prompt step none of whose replies parse stops the cell (the model does not write the
    # format asked for) rather than record a cell that added nothing
    allow_unparseable: bool = False
    # false: a math reply is cut after its '#### <number>' line, as the LLM2LLM authors cut theirs
    # (what a model writes after its answer, a second problem say, is not the example's solution)
    keep_after_answer: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            STRATEGIES[cls.name] = cls

    def __post_init__(self):
        if not isinstance(self.filters, FiltersConfig):
            self.filters = FiltersConfig.of(self.filters)
        self.check()
        self.voices = list(self.persona_pool)[:self.personas]
        self.worked_example: tuple | None = None  # (shown, written) seed examples, see choose_worked_example

    def check(self) -> None:
        """The settings' ranges, each failing in one line that names the key; a subclass adds its own."""
        at_least("strategy.temperature", self.temperature, 0)
        at_least("strategy.max_tokens", self.max_tokens, 1)
        check(0 <= self.personas <= len(self.persona_pool), "strategy.personas", self.personas,
              f"must be 0 to {len(self.persona_pool)} (the voices in strategy.persona_pool)")

    @abstractmethod
    def run(self, job: StrategyJob) -> None:
        """Generate, train and score through `job`, round after round."""

    @abstractmethod
    def workload(self, seed_size: int, max_queries: int | None, count_augmenter: bool) -> Workload:
        """An upper bound on what `run` trains, scores and asks for, at seed set size |S| and budget Q."""

    # -- prompts and replies ---------------------------------------------------------------------------

    def template(self, step: Step, task: TaskData) -> dict:
        return step.template(self.prompts, task.config.kind, self.name)

    def request(self, step: Step, task: TaskData, source: Example | dict, sample_index: int = 0) -> Request:
        """A chat request rendering the step's template for one source example, to the step's role."""
        template = self.template(step, task)
        fields = source if isinstance(source, dict) else source_fields(source, task)
        context = self.context(fields, task)
        messages = []
        system = _JINJA.from_string(template["system"]).render(context) if template.get("system") else ""
        if self.voices:  # a voice per (source, sample), stable across reruns
            persona = self.voices[
                zlib.crc32(f"{fields.get('id')}/{sample_index}/{step.name}".encode()) % len(self.voices)
            ]
            system = f"{system.rstrip()}\n\nWrite as {persona}.".strip()
        if system:
            messages.append({"role": "system", "content": system})
        if template.get("example_user"):
            messages.append({"role": "user", "content": template["example_user"]})
            messages.append({"role": "assistant", "content": template["example_assistant"]})
        elif template.get("worked_example") == "seed" and self.worked_example:
            # the worked example from the task's own seed set: one seed example shown, another of its label
            # written back in the reply format
            shown, written = (self.context(source_fields(e, task), task) for e in self.worked_example)
            messages.append({"role": "user", "content": _JINJA.from_string(template["user"]).render(shown)})
            reply = _JINJA.from_string(template["reply_format"]).render(written)
            messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": _JINJA.from_string(template["user"]).render(context)})
        return Request(messages=tuple(messages), temperature=self.temperature, top_p=1.0,
                       max_tokens=self.max_tokens, sample_index=sample_index, role=step.role, kind=step.name,
                       source=fields, reply_format=template.get("reply_format"),
                       stop=tuple(template.get("stop") or ()))

    @staticmethod
    def context(fields: dict, task: TaskData) -> dict:
        return {**fields, **task.kind.prompt_fields(fields.get("label", "")),
                "description": task.config.description, "labels": ", ".join(task.config.labels),
                "cue": task.config.cue}

    def choose_worked_example(self, seed: list) -> None:
        """Two seed examples of one label (the first label, in seed order, that has two) for the prompts
        whose worked example comes from the seed set (`worked_example: seed`)."""
        by_label: dict = {}
        for example in seed:
            by_label.setdefault(example.label, []).append(example)
            if len(by_label[example.label]) == 2:
                self.worked_example = tuple(by_label[example.label])
                return

    def matched(self, step: Step, task: TaskData, text: str) -> dict | None:
        """A free-text reply's fields: the template's `parse` is a pattern, or a list of them tried in
        order (the format asked for first, then what a weaker model writes instead)."""
        patterns = self.template(step, task)["parse"]
        patterns = [patterns] if isinstance(patterns, str) else patterns
        match = next((m for m in (re.search(p, text) for p in patterns) if m), None)
        if match is None:
            return None
        return {k: v.strip() for k, v in match.groupdict().items() if v is not None}

    def parse(self, step: Step, task: TaskData, text: str, tally: Tally, about: Reply | None = None,
              structured: bool = False) -> dict | None:
        """The reply's fields (a structured reply's JSON, else matched by the prompt's patterns),
        validated for the task (a number after '####', a label in the label set); None, counted, when the
        reply does not parse."""
        fields = structured_fields(text) if structured else self.matched(step, task, text)
        tally.replies[step.name] += 1
        if fields is None:  # the augmenter's replies counted apart from the teacher's
            tally.drop("unparseable" if step.role == "teacher" else f"unparseable_{step.name}", about,
                       "not in the reply format the prompt asks for")
            return None
        if not self.keep_after_answer:
            fields = task.kind.cut_after_answer(fields)
        read, dropped = task.kind.read_reply(fields, task.config.labels)
        if dropped:  # what the reply said, field by field
            tally.drop(dropped, about, "; ".join(f"{k}: {v[:120]!r}" for k, v in fields.items()))
        else:
            tally.parsed[step.name] += 1
        return read

    def refuse_if_nothing_parsed(self, tally: Tally) -> None:
        """Stop the cell when every reply to a prompt step failed to parse (unless allow_unparseable)."""
        for step, replies in tally.replies.items():
            if replies and not tally.parsed[step] and not self.allow_unparseable:
                drops = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in tally.counts.items() if n)
                raise BenchError(
                    f"strategy {self.name}: none of the {replies} replies to its '{step}' prompt parsed "
                    f"({drops}); the model does not write the format the prompt asks for (its replies are in "
                    "generations.jsonl of the run folder): use a stronger model, adjust the prompt in "
                    "conf/prompts/, or set strategy.allow_unparseable=true to keep a cell that adds nothing"
                )

    def parsed_replies(self, teacher: Teacher, step: Step, task: TaskData, requests: list, description: str,
                       tally: Tally, missing: str | None = "no_answer"):
        """(request index, parsed fields, response) for each reply that came back and parsed; the
        requests without an answer (as `missing`, when given) and the replies that do not parse are
        counted in `tally`."""
        if teacher.structured:  # the backend keeps each reply to the step's schema
            schema = step.schema(self.template(step, task), task.config.labels)
            requests = [replace(request, schema=schema) for request in requests]
        for index, response in enumerate(teacher.generate(requests, description)):
            about = Reply.of(step, requests[index], response)
            if response is None:
                if missing:
                    tally.drop(missing, about, "no usable answer: the request failed, the reply was cut at "
                               "max_tokens (the generation cache keeps it), or the budget refused it")
                continue
            fields = self.parse(step, task, response.text, tally, about, teacher.structured)
            if fields is not None:
                yield index, fields, response

    def question_filters(self, task: TaskData, training: list) -> Filters:
        return Filters(task, training, self.filters)


def source_fields(example: Example, task: TaskData) -> dict:
    """What a prompt and the simulated teacher may know of a source example."""
    return {"id": example.id, "question": question_of(example, task), "answer": example.target,
            "target": example.target, "label": example.label}


def make_example(task: TaskData, example_id: str, question: str, target: str, label: str) -> Example:
    cfg = task.config
    return Example(
        id=example_id,
        prompt=student_prompt(cfg, question),
        target=target.strip(),
        label=label,
        record={"question": question},
    )


def writer(teacher: Teacher) -> str:
    return f"{teacher.backend.name}:{teacher.backend.model}"
