"""The diversity study's pre-training protocol (Chen et al. 2024; docs/protocols.md §3): the teacher writes a
synthetic corpus, one text per topic x style (each in one of `personas` voices); the student is
pre-trained on it (the loss on every token), then fine-tuned on the seed set from those weights. Both
stages are scored on the task's test split and on lm-eval's zero-shot tasks, when named."""

from dataclasses import dataclass, field, fields, replace
from typing import Any

from bench.config import TrainConfig, at_least, check
from bench.errors import BenchError, first_line
from bench.steps import CORPUS
from bench.strategies.base import Generated, Strategy, StrategyJob, Tally, Workload, writer
from bench.tasks import Example, question_of

STYLES = ("textbook passage", "news article", "forum post", "dialogue", "encyclopedia entry", "story")


@dataclass(kw_only=True)
class SyntheticPretraining(Strategy):
    name = "synthetic_pretraining"
    family = "pretraining"
    baseline = None  # judged by its zero-shot scores and the diversity of its corpus (docs/protocols.md §3)
    pretrains = True
    extra_fields = ("topic", "style")

    topics: list[str] = field(default_factory=list)  # empty: the seed questions serve as topics
    styles: list[str] = field(default_factory=lambda: list(STYLES))
    generations_per_topic: int = 1
    personas: int = 3
    max_tokens: int = 1024
    real_share: float = 0.0  # of the pre-training texts, real ones (the task's pool beyond the seed set)
    # the SFT stage's data: null fine-tunes on the seed set; or an instruction set {path, prompt, target,
    # name, split, data_files, limit} (a Hub dataset, or json with data_files)
    sft: Any = None
    # the pre-training recipe: keys of the train config, over train (the SFT recipe)
    pretrain: dict[str, Any] = field(default_factory=lambda: {"epochs": 2, "learning_rate": 1.0e-3})
    zero_shot_tasks: list[str] = field(default_factory=list)  # lm-eval tasks, after pre-training and SFT
    zero_shot_include_path: str | None = None  # a folder of extra lm-eval task YAMLs
    zero_shot_limit: int | None = None

    def check(self) -> None:
        super().check()
        check(bool(self.styles), "strategy.styles", self.styles, "must list at least one style")
        at_least("strategy.generations_per_topic", self.generations_per_topic, 1)
        check(0 <= self.real_share < 1, "strategy.real_share", self.real_share, "must be in [0, 1)")
        if self.sft is not None and not {"path", "prompt", "target"} <= set(self.sft):
            raise BenchError("strategy.sft needs path (a Hub dataset, or json with data_files), prompt and "
                             "target (Jinja over its columns); or null to fine-tune on the seed set")
        unknown = sorted(set(self.pretrain) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise BenchError(f"strategy.pretrain has unknown keys {unknown}: use keys of the train config "
                             "(conf/train/)")

    def run(self, job: StrategyJob) -> None:
        corpus = self.corpus(job)
        if not corpus:
            raise BenchError("the teacher wrote no usable corpus text; see generation/* in the run's metrics")
        recipe = replace(job.recipe, **self.pretrain)  # TrainConfig checks the values
        keep = bool(self.zero_shot_tasks)
        corpus += self.real_texts(job, len(corpus))
        pretrained = job.train_and_score(corpus, iteration=0, keep_weights=True, recipe=recipe)
        self.score_zero_shot(job, pretrained)
        sft = self.instructions() if self.sft else job.seed_set
        tuned = job.train_and_score(sft, iteration=1, start_from=pretrained, keep_weights=keep)
        self.score_zero_shot(job, tuned)

    def instructions(self) -> list:
        """The SFT set (strategy.sft): a Hugging Face dataset (Hub id, or `json` with data_files), each row
        rendered into a prompt and a target; at most `limit` rows."""
        import datasets
        import jinja2

        cfg, env = self.sft, jinja2.Environment(undefined=jinja2.StrictUndefined)
        try:
            rows = datasets.load_dataset(cfg["path"], cfg.get("name"), split=cfg.get("split", "train"),
                                         data_files=cfg.get("data_files"))
        except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
            raise BenchError(f"strategy.sft: cannot load {cfg['path']} ({first_line(error)}); "
                             "check the dataset id or data_files, and Hub access") from None
        prompt, target = env.from_string(cfg["prompt"]), env.from_string(cfg["target"])
        limit = cfg.get("limit") or len(rows)
        rows = rows.select(range(min(limit, len(rows))))
        return [Example(id=f"sft-{i}", prompt=prompt.render(**row).strip(),
                        target=target.render(**row).strip(), label="") for i, row in enumerate(rows)]

    def real_texts(self, job: StrategyJob, synthetic: int) -> list:
        """Real texts to mix in, so they are `real_share` of the pre-training texts: the task's training
        pool beyond the seed set, in pool order (the paper mixes real web text at a fixed token share)."""
        wanted = round(synthetic * self.real_share / (1 - self.real_share))
        seed_ids = {e.id for e in job.seed_set}
        pool = [e for e in job.task.train if e.id not in seed_ids]
        if wanted > len(pool):
            raise BenchError(f"strategy.real_share={self.real_share} asks for {wanted} real texts and the "
                             f"training pool beyond the seed set holds {len(pool)}: lower real_share")
        return [Example(id=f"real-{e.id}", prompt="", target=question_of(e, job.task), label="",
                        record={"question": question_of(e, job.task)}) for e in pool[:wanted]]

    def workload(self, seed_size: int, max_queries: int | None, count_augmenter: bool) -> Workload:
        texts = (len(self.topics) or seed_size) * self.generations_per_topic
        mixed = texts + round(texts * self.real_share / (1 - self.real_share))
        sft = (self.sft or {}).get("limit") or seed_size  # an instruction set counts as its limit
        return Workload([(mixed, self.pretrain.get("epochs")), (sft, None)], [0, 0],
                        teacher_queries=texts, tokens=[self.max_tokens, None])  # a text: at most max_tokens

    def corpus(self, job: StrategyJob) -> list:
        """One text per (topic, generation); style and persona vary with the generation."""
        task, teacher, tally = job.task, job.teacher, Tally()
        topics = self.topics or [e.record.get("question") or e.prompt for e in job.seed_set]
        sources, requests = [], []
        for t, topic in enumerate(topics):
            for g in range(self.generations_per_topic):
                style = self.styles[(t + g) % len(self.styles)]
                fields = {"id": f"topic-{t}", "topic": topic, "style": style, "question": topic}
                sources.append(fields)
                requests.append(self.request(CORPUS, task, fields, g))
        tally.add("requested", len(requests))
        texts = []
        for i, parsed, response in self.parsed_replies(
            teacher, CORPUS, task, requests, "corpus: teacher", tally
        ):
            fields = sources[i]
            example = Example(id=f"corpus-{len(texts)}", prompt="", target=parsed["text"], label="",
                              record={"question": parsed["text"]})
            texts.append(Generated(example, {"strategy": self.name, "iteration": 0, "source_id": fields["id"],
                                             "topic": fields["topic"], "style": fields["style"],
                                             "written_by": writer(teacher), "role": "teacher",
                                             "cache_key": response.key}))
        tally.add("added", len(texts))
        job.add_generated(0, texts, tally)
        self.refuse_if_nothing_parsed(tally)
        return [g.example for g in texts]

    def score_zero_shot(self, job: StrategyJob, stage) -> None:
        if self.zero_shot_tasks:
            job.zero_shot(stage, self.zero_shot_tasks, self.zero_shot_include_path, self.zero_shot_limit)
