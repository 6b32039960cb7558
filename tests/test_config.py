import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from bench.config import validated
from bench.errors import BenchError
from tests.conftest import REPO, compose_config, typed_config

TASKS = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
STUDENTS = sorted(p.stem for p in (REPO / "conf" / "student").glob("*.yaml"))


def test_the_default_is_the_tiny_student_on_trec():
    cfg = typed_config()
    assert (cfg.task.name, cfg.student.name, cfg.student.pretrained) == ("trec", "tiny", None)
    assert cfg.train.learning_rate == 1e-3  # tiny brings the from-scratch recipe
    assert cfg.seed_set.size == 500 and cfg.eval.decoding == "greedy"


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("student", STUDENTS)
def test_every_task_and_student_compose(task, student):
    cfg = typed_config(f"task={task}", f"student={student}")
    assert cfg.task.name == task and cfg.task.cue


def test_real_students_get_the_papers_recipe():
    cfg = typed_config("student=7b")
    assert cfg.student.pretrained == "meta-llama/Llama-2-7b-hf"
    t = cfg.train
    assert (t.epochs, t.learning_rate, t.lr_scheduler, t.warmup_ratio, t.weight_decay,
            t.effective_batch_size, t.max_length) == (3, 2e-5, "cosine", 0.03, 0.0, 128, 1024)
    assert typed_config("student=350m").student.pretrained == "EleutherAI/pythia-410m"
    assert typed_config("student=1.4b").student.pretrained == "EleutherAI/pythia-1.4b"


def test_command_line_train_choice_beats_the_students_recipe():
    assert typed_config("student=tiny", "train=budget").train.learning_rate == 4e-5


def test_gsm8k_is_scored_as_llm2llms_authors_did_and_greedy_is_a_switch():
    cfg = typed_config("task=gsm8k")
    assert (cfg.task.scoring_decoding, cfg.eval.sampling.temperature, cfg.eval.sampling.top_p,
            cfg.eval.sampling.max_new_tokens, cfg.eval.greedy_column) == ("sampled", 0.7, 0.9, 100, True)
    greedy = typed_config("task=gsm8k", "task.scoring_decoding=null", "task.scoring_instruction=null")
    assert greedy.task.scoring_decoding is None and greedy.eval.decoding == "greedy"


def test_a_typo_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException):
        compose_config("train.epoch=3")


def test_a_wrong_type_fails_at_compose_time():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config("train.epochs=three")


def test_a_missing_value_fails_before_any_work():
    cfg = compose_config()
    cfg.task.cue = "???"  # OmegaConf's MISSING, as a task YAML without `cue:` leaves it
    with pytest.raises(BenchError, match="task.cue is required"):
        validated(cfg)


def test_data_dir_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", "/somewhere/data")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(REPO, "conf")), version_base="1.3"):
        assert compose("config").data_dir == "/somewhere/data"


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = typed_config(f"experiment={experiment}")
    assert cfg.task.name and cfg.student.name


def test_paper_scale_baseline_preset():
    cfg = typed_config("experiment=finetune_7b")
    assert (cfg.task.name, cfg.student.name, cfg.train.learning_rate) == ("gsm8k", "7b", 2e-5)
    assert (cfg.seed_set.size, cfg.seed_set.fraction) == (None, 0.01)


@pytest.mark.parametrize("override", [
    "eval.decoding=sampeld", "diversity.text=answers", "task.kind=regression", "logger.backend=tensorboard",
    "logger.mode=onlne", "student.dtype=fp8", "diversity.cluster_agent.invalid_clusters=merge",
    "task.local.format=parquet", "train.lr_scheduler=cosin",
])
def test_an_option_outside_its_set_fails_at_compose_time(override):
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        compose_config(override)
    bad = override.split("=")[1]
    assert f"Invalid value '{bad}', expected one of" in f"{error.value} {error.value.__cause__}"


@pytest.mark.parametrize("override, message", [
    ("teacher.max_concurrency=0", "teacher.max_concurrency=0 must be at least 1"),
    ("teacher.max_attempts=0", "teacher.max_attempts=0 must be at least 1"),
    ("train.epochs=-1", "train.epochs=-1.0 must be positive"),
    ("train.epochs=0", "train.epochs=0.0 must be positive"),
    ("eval.limit=0", "eval.limit=0 must be at least 1"),
    ("budget.max_queries=-4", "budget.max_queries=-4 must be at least 0"),
    ("budget.ratio=-2", "budget.ratio=-2.0 must be positive"),
    ("train.learning_rate=0", "train.learning_rate=0.0 must be a positive finite number"),
    ("train.epochs=inf", "train.epochs=inf must be positive and finite"),
    ("train.learning_rate=nan", "train.learning_rate=nan must be a positive finite number"),
    ("teacher.max_backoff_s=inf", "teacher.max_backoff_s=inf must be at least 0 and finite"),
    ("student.architecture.num_attention_heads=5",
     "hidden_size=256 must be a multiple of num_attention_heads=5"),
    ("student.lora.target_modules=[]", r"student.lora.target_modules=\[\] must be all-linear or a list"),
    ("eval.sampling.top_p=1.5", r"eval.sampling.top_p=1.5 must be in \(0, 1\]"),
    ("diversity.cluster_agent.clustering_samples=1", "clustering_samples=1 must be at least 2"),
])
def test_a_number_that_makes_no_sense_fails_before_any_work(override, message):
    with pytest.raises(BenchError, match=message):
        typed_config(override)


@pytest.mark.parametrize("override, message", [
    ("teacher.backend.requests_per_minute=-5",
     "requests_per_minute=-5 must be a positive finite number or null"),
    ("teacher.backend.tokens_per_minute=0", "tokens_per_minute=0 must be a positive finite number or null"),
    ("teacher.backend.timeout_s=0", "timeout_s=0 must be a positive finite number"),
    ("teacher.backend.timeout_s=-1", "timeout_s=-1 must be a positive finite number"),
])
def test_a_server_setting_that_would_hang_the_job_fails_before_any_work(override, message):
    with pytest.raises(BenchError, match=message):
        typed_config("teacher=openai", override)


def test_the_scheduler_names_are_transformers_own():
    from transformers import SchedulerType

    from bench.config import LrScheduler

    assert {s.value for s in LrScheduler} <= {s.value for s in SchedulerType}


def test_strategy_settings_fail_when_composed_or_validated_before_anything_runs():
    """Each strategy family's settings schema (bench/config.py): a mistyped key or value fails when Hydra
    composes (as every other option), a value out of range when the config is validated."""
    from hydra.errors import ConfigCompositionException

    from bench.strategies import build_strategy

    for override in ("strategy.iterations=abc", "strategy.temperature=hot", "strategy.itrations=3",
                     "strategy.filters.near_duplicate_rouge=0.9"):
        with pytest.raises(ConfigCompositionException):
            compose_config(override)
    with pytest.raises(ConfigCompositionException):
        compose_config("strategy=new_question", "strategy.verify=maybe")
    for overrides, message in [
        (["strategy.filters.near_duplicate_rouge_l=1.5"], r"near_duplicate_rouge_l=1.5 must be in \(0, 1\]"),
        (["strategy.temperature=-1"], "strategy.temperature=-1.0 must be at least 0"),
        (["strategy=new_question", "strategy.max_tokens=0"], "strategy.max_tokens=0 must be at least 1"),
        (["strategy.iterations=0"], "strategy.iterations=0 must be at least 1"),
        (["strategy=answer_augmentation", "strategy.agreement_samples=1"], "samples=1 must be at least 2"),
        (["strategy.personas=99"], "strategy.personas=99 must be 0 to"),
    ]:
        with pytest.raises(BenchError, match=message):
            typed_config(*overrides)
    with pytest.raises(BenchError, match=r"strategy.pretrain has unknown keys \['epoch'\]"):
        build_strategy(compose_config("strategy=synthetic_pretraining", "+strategy.pretrain.epoch=2")
                       .strategy)
    with pytest.raises(BenchError, match="Q=2 .* buys no example of new_question, which costs 3 queries"):
        build_strategy(compose_config("strategy=new_question").strategy).workload(100, 2, True)
    with pytest.raises(BenchError, match="Q=0 .*|S|=49.* buys no example of answer_augmentation"):
        build_strategy(compose_config("strategy=answer_augmentation").strategy).workload(49, 0, True)



def test_the_budget_grid_reaches_the_papers_queries_and_caps_the_full_set_rows():
    from bench.teachers import query_budget

    budget = typed_config("experiment=budget_strategies", "budget.ratio=1000").budget
    assert query_budget(budget, 100) == 100_000  # the paper's tens of thousands of queries at |S| = 100
    assert query_budget(budget, 7473) == 400_000  # the full training set: capped, not 7.5M...
    assert query_budget(dataclasses.replace(budget, ratio=51), 7473) == 51 * 7473  # ...but past BR 17
    assert query_budget(dataclasses.replace(budget, ratio=300), 100) == 30_000
    sweep = OmegaConf.load(Path(__file__).parents[1] / "conf" / "experiment" / "budget_strategies.yaml")
    assert sweep.hydra.sweeper.params["budget.count_augmenter"] == "true,false"  # both readings of Q
    ratios = [float(r) for r in sweep.hydra.sweeper.params["budget.ratio"].split(",")]
    # grid points on both sides of each of the paper's crossovers (27-51 at |S| = 100, ~17 at 1000, full)
    assert {15, 20, 27, 40, 51, 70} <= set(ratios) and ratios[-2:] == [300, 1000]


def test_the_budget_study_scores_gsm8k_without_cutting_a_long_solution(data_dir):
    """The budget preset scores GSM8K greedily with room for the longest gold solution (LLM2LLM's
    scoring stops at 100 new tokens: 61% of GSM8K's solutions are longer) and without LLM2LLM's
    instructions; the LLM2LLM preset keeps its authors' scoring."""
    from bench.evaluation import generation_kwargs
    from bench.tasks import load_task

    budget = typed_config("experiment=budget_strategies", "student=tiny", "teacher=simulated")
    scoring = generation_kwargs(budget.task, budget.eval)
    assert scoring["do_sample"] is False and scoring["max_gen_toks"] >= 454  # SmolLM2's count of the longest
    assert budget.task.instruction == "" and budget.task.scoring_instruction is None
    solutions = [e.target for e in load_task(budget.task, str(data_dir)).test]
    long = next(s for s in solutions if len(s) > 900)  # a ~300-token worked solution
    assert not any(stop in long for stop in scoring["until"])  # no stop string cuts it before its '####'
    llm2llm = typed_config("experiment=llm2llm", "task=gsm8k", "student=tiny", "teacher=simulated")
    assert generation_kwargs(llm2llm.task, llm2llm.eval)["max_gen_toks"] == 100  # the authors' eval.py


def test_an_error_quoted_in_a_one_line_error_never_breaks_it():
    from bench.errors import first_line, last_line
    from bench.students import cannot_load

    assert first_line(OSError()) == "OSError" and last_line(KeyError()) == "KeyError"  # empty messages
    assert first_line(ValueError("\n  the cause\nmore")) == "the cause"
    assert last_line(ValueError("a\nb\n")) == "b"
    assert first_line(ValueError("x" * 300), 120) == "x" * 120
    student = typed_config("student=smollm2_135m").student
    assert "(OSError); check the id" in str(cannot_load(student, OSError()))  # was: IndexError


def test_a_composed_config_pickled_to_another_process_keeps_its_strategy_schema(tmp_path):
    """What a launcher does (joblib's workers, a SLURM task): the composed config is pickled, and the
    worker's cell builds the effective config from it. The strategy node is typed with a schema derived
    from its class: the worker must find that same schema (it read 'X is not a subclass of X')."""
    import pickle
    import subprocess
    import sys

    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(compose_config("strategy=new_question")))
    code = ("import pickle, sys; from runners.inputs import effective; "
            "cfg = effective(pickle.load(open(sys.argv[1], 'rb'))); print(cfg.strategy.self_check)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg.pkl")], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "True", done.stderr[-1500:]
