"""The grid planner's arithmetic against hand calculations (bench/resources.py, runners/plan.py)."""

import pytest

from bench.resources import GIB, student_shape, training_flops, training_memory
from runners.plan import main, plan
from tests.conftest import typed_config

LLAMA_2_7B = 6_738_415_616  # meta-llama/Llama-2-7b-hf's parameters


@pytest.fixture(scope="module")
def llama_7b():
    return student_shape(typed_config("student=7b").student)


def memory(shape, **settings):
    defaults = {
        "gpus": 1,
        "fsdp": False,
        "weight_bytes": 4,
        "mixed_precision": True,
        "batch": 4,
        "length": 1024,
        "checkpointing": False,
    }
    return training_memory(shape, **{**defaults, **settings})


def test_the_students_parameters_are_the_published_counts(llama_7b):
    assert llama_7b.parameters == LLAMA_2_7B
    assert student_shape(typed_config("student=350m").student).parameters == 405_334_016  # pythia-410m
    assert student_shape(typed_config("student=1.4b").student).parameters == 1_414_647_808  # pythia-1.4b


def test_a_7b_full_fine_tune_does_not_fit_one_80_gb_gpu(llama_7b):
    m = memory(llama_7b)
    # fp32 master weights, fp32 gradients, AdamW's two fp32 moments: 16 bytes a parameter, 100 GiB
    assert m.parts["weights"] + m.parts["gradients"] + m.parts["optimizer"] == 16 * LLAMA_2_7B
    assert pytest.approx(100.4, abs=0.1) == 16 * LLAMA_2_7B / GIB
    # activations, bf16, 4 x 1024 tokens x 32 layers x (16 x 4096 + 8 x 11008) bytes
    assert m.parts["activations"] == 4 * 1024 * 32 * (16 * 4096 + 8 * 11008)
    assert m.total > 80 * GIB


def test_on_four_gpus_with_fsdp_full_shard_it_fits(llama_7b):
    m = memory(llama_7b, gpus=4, fsdp=True)
    assert m.parts["weights"] + m.parts["gradients"] + m.parts["optimizer"] == 16 * LLAMA_2_7B / 4
    assert m.total < 80 * GIB
    checkpointed = memory(llama_7b, gpus=4, fsdp=True, checkpointing=True)
    assert checkpointed.parts["activations"] == 4 * 1024 * (32 * 2 * 4096 + 16 * 4096 + 8 * 11008)


def test_lora_7b_fits_one_gpu(llama_7b):
    lora = student_shape(typed_config("student=7b", "student.lora.enabled=true").student)
    # r = 16 on every linear layer of the 32 decoder layers: q, k, v, o (4096 -> 4096), and gate, up,
    # down (4096 <-> 11008)
    assert lora.trainable == 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    m = memory(lora)
    assert m.parts["weights"] == 4 * LLAMA_2_7B and m.parts["optimizer"] == 8 * lora.trainable
    assert m.total < 80 * GIB


def test_training_flops_are_six_a_parameter_a_token_and_eight_when_recomputing(llama_7b):
    assert training_flops(llama_7b, 1e6, checkpointing=False) == 6 * LLAMA_2_7B * 1e6
    assert training_flops(llama_7b, 1e6, checkpointing=True) == 8 * LLAMA_2_7B * 1e6


def test_the_llm2llm_preset_cell_by_cell(data_dir):
    rows = plan(
        [
            "experiment=llm2llm",
            "task=trec",
            "seed_set.fraction=0.01",
            "strategy=finetune,llm2llm",
            f"data_dir={data_dir}",
        ]
    )
    finetune, llm2llm = rows
    assert [r["cell"] for r in rows] == ["strategy=finetune", "strategy=llm2llm"]
    assert finetune["seed_set"] == llm2llm["seed_set"] == round(0.01 * 5442)
    assert finetune["teacher_queries"] == 0
    # 10 iterations, one new example per wrong seed example: at most 9 rounds x |S| requests, each asked
    # up to 1 + 4 times (strategy.retries), and round t trains on at most |S| (1 + t) examples: 55 |S|
    # examples x 3 epochs, against finetune's |S| x 3
    assert llm2llm["teacher_queries"] == 9 * 54 * 5
    assert llm2llm["train_tokens"] == pytest.approx(55 * finetune["train_tokens"])
    assert all(r["fits"] and r["gpus"] == 4 and r["sharding"] == "fsdp" for r in rows)
    assert llm2llm["dollars"] > 0 and llm2llm["gpu_hours"] > finetune["gpu_hours"] > 0


def test_an_unfit_cell_is_flagged_with_what_would_fit(data_dir, capsys):
    assert (
        main(
            [
                "experiment=llm2llm",
                "task=trec",
                "seed_set.fraction=0.01",
                "strategy=finetune",
                "compute=1gpu",
                f"data_dir={data_dir}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert " NO " in out and "would fit with compute.gpus=2 compute.sharding=fsdp" in out
    assert "1 cells do not fit" in out


def test_a_student_the_planner_cannot_size_is_one_line(tmp_path):
    from bench.errors import BenchError

    student = typed_config(f"student.pretrained={tmp_path / 'no-model'}", "student.name=mine").student
    with pytest.raises(BenchError, match=r"^student mine: cannot read .*give its sizes in student.shape"):
        student_shape(student)


def test_the_power_line_says_what_a_grid_detects_from_the_stored_noise(tmp_path):
    import json

    from runners.plan import power_lines
    from tests.test_sweeps import fake_record

    store = tmp_path / "store" / "cells"
    store.mkdir(parents=True)
    for seed, accuracy in enumerate((0.50, 0.55, 0.60)):  # sd 0.05 over three seed sets
        record = fake_record("finetune", accuracy, seed=seed)
        (store / f"{record['cell_id']}.json").write_text(json.dumps(record))
    rows = [{"task": "trec", "student": "tiny", "draw": (0, r), "store_dir": str(tmp_path)} for r in range(3)]
    [line] = power_lines(rows, [tmp_path / "store"])
    # a paired difference's sd taken as 0.05 * √2; the noncentral t at 2 degrees of freedom puts 80% power
    # at 23.1 points (the t approximation's (4.30 + 1.06) x 0.0707 / √3 said 21.9, which has 77%)
    assert "run-to-run sd 0.050 (df 2, pooled over the stored recipes)" in line
    assert "its 3 replicates detect differences of 23.1 pts or more" in line
    assert "5 pts needs 18" in line
    [none] = power_lines(rows[:1], [tmp_path / "nothing"])
    assert "no recipe of it ran twice" in none and "replicate=0,1,2" in none


def test_a_cpu_cell_is_checked_against_its_memory_and_told_what_it_needs(data_dir):
    from runners.plan import plan

    [row] = plan(["strategy=finetune", "compute=cpu", "compute.processes=2", "compute.memory_gb=1",
                  f"data_dir={data_dir}"])
    assert row["gpus"] == 0 and row["gpu_memory_gib"] == 0.5 and not row["fits"]  # 1 GB over 2 processes
    needed = int(row["instead"].removeprefix("compute.memory_gb="))
    assert needed >= 2 * row["memory_gib"]
    [enough] = plan(["strategy=finetune", "compute=cpu", "compute.processes=2", f"compute.memory_gb={needed}",
                     f"data_dir={data_dir}"])
    assert enough["fits"]


def test_batch_jobs_are_planned_at_the_providers_discount(data_dir):
    """teacher.backend.mode=batch: the same queries, half the dollars (the batch discount)."""
    common = ["experiment=llm2llm", "task=trec", "seed_set.fraction=0.01", "strategy=llm2llm",
              "teacher=openai", f"data_dir={data_dir}"]
    live, = plan(common)
    batch, = plan([*common, "teacher.backend.mode=batch"])
    assert batch["teacher_queries"] == live["teacher_queries"] and live["dollars"] > 0
    assert batch["dollars"] == pytest.approx(live["dollars"] / 2)
