"""The typed records (bench/records.py): written in one place, read back whole, older records read with
defaults, and a paired cell (the LLM2LLM one-shot ablation's) found by a store query on them."""

import json

from bench.records import CellRecord, RoundRecord, finished_cell
from bench.store import CellStore

CONFIG = {"task": {"name": "trec"}, "seed_set": {"size": 50}, "teacher": {"name": "simulated"},
          "strategy": {"iterations": 3, "per_wrong": 1}}


def done_cell(cell_id: str, added: list[int], strategy: dict | None = None, family: str = "llm2llm",
              task: str = "trec") -> CellRecord:
    rounds = [RoundRecord(iteration=i, test_acc=0.5 + i / 10, test_acc_stderr=0.02, train_steps=8,
                          generation={"added": n} if n else {}) for i, n in enumerate([0, *added])]
    config = {**CONFIG, "task": {"name": task}, "strategy": {**CONFIG["strategy"], **(strategy or {})}}
    return CellRecord(cell_id=cell_id, run_dir=f"/runs/{cell_id}", overrides=[], choices={}, status="done",
                      config=config, metrics={"final/test_acc": 0.7}, strategy="llm2llm", family=family,
                      seed_set_size=50, iterations=rounds, stages={"trained": len(rounds), "reused": 0})


def test_a_cell_record_reads_back_as_it_was_written(tmp_path):
    record = done_cell("a" * 16, [4, 2])
    record.write(tmp_path / "record.json")
    written = json.loads((tmp_path / "record.json").read_text())
    assert "error" not in written and written["sweep"] is None  # unset results left out; where it ran kept
    back = CellRecord.from_dict(written)
    assert back == record and back.added == 6 and back.iterations[1].added == 4


def test_an_older_record_reads_with_defaults_and_unknown_keys_are_ignored():
    old = {"cell_id": "b" * 16, "run_dir": "/old", "overrides": [], "status": "done", "future_field": 1,
           "iterations": [{"iteration": 0, "test_acc": 0.4}]}
    record = CellRecord.from_dict(old)
    assert record.choices == {} and record.iterations[0].train_steps is None
    assert record.zero_shot_mean(0) is None and record.added == 0


def test_a_paired_cell_is_a_store_query(tmp_path):
    store = CellStore(tmp_path)
    store.add(done_cell("c" * 16, [5, 5], strategy={"one_shot": True}).to_dict())  # an ablation: not it
    store.add(done_cell("d" * 16, [9, 9], task="sst2").to_dict())  # another task: not it
    same = {part: CONFIG[part] for part in ("task", "seed_set", "teacher")}

    def iterative(settings):
        return not settings.get("one_shot") and settings["iterations"] == 3

    assert finished_cell(str(tmp_path), same, iterative) is None
    store.add(done_cell("e" * 16, [4, 3]).to_dict())
    assert finished_cell(str(tmp_path), same, iterative).cell_id == "e" * 16
    assert finished_cell(str(tmp_path), same, iterative).added == 7
    assert finished_cell(str(tmp_path), same, lambda settings: settings["iterations"] == 2) is None
    assert finished_cell(str(tmp_path), {**same, "seed_set": {"size": 100}}, iterative) is None
