"""Generated data as a Hugging Face dataset with its card (runners/export.py), from a real tiny sweep."""

import json
import re

import pytest
from datasets import load_dataset, load_from_disk
from huggingface_hub import DatasetCard

from runners import export
from tests.conftest import new_question_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return new_question_sweep(tmp_path_factory.mktemp("sweep"), "1")


def test_a_sweeps_data_loads_with_datasets_and_its_card_with_huggingface_hub(sweep, tmp_path):
    to = tmp_path / "data"
    assert export.main([str(sweep), "--to", str(to)]) == 0
    (cell,) = [p.name for p in to.iterdir() if p.is_dir()]  # fine-tuning generated nothing
    assert cell == "new_question-simulated"
    saved = load_from_disk(str(to / cell))
    kept, dropped = saved["train"], saved["dropped"]
    run = next(p.parent for p in sweep.glob("*/record.json") if (p.parent / "generated").is_dir())
    written = [json.loads(line) for line in (run / "generated" / "iteration_1.jsonl").open()]
    assert kept["id"] == [w["id"] for w in written] and kept["prompt"] == [w["prompt"] for w in written]
    seeds = {seed["id"]: seed for seed in map(json.loads, (run / "seed_set.jsonl").open())}
    for row in kept:  # each beside its seed example and the teacher's raw reply
        assert row["source_prompt"] == seeds[row["source_id"]]["prompt"]
        assert row["teacher"] == "simulated" and row["teacher_reply"] and row["strategy"] == "new_question"
        assert row["cache_key"] and row["sample_index"] is not None
    record = json.loads((run / "record.json").read_text())
    near = record["iterations"][-1]["generation"].get("near_duplicate", 0)
    assert near > 0 and dropped["reason"].count("near_duplicate") == near  # every drop, with its reason
    first = dropped[dropped["reason"].index("near_duplicate")]
    assert first["detail"].startswith("ROUGE-L > 0.5 with: ") and first["question"] and first["source_prompt"]
    # the Hub layout: load_dataset reads the folder's card and parquet files, one config each
    assert load_dataset(str(to), cell)["train"]["id"] == kept["id"]
    assert load_dataset(str(to), f"{cell}-dropped")["dropped"].num_rows == dropped.num_rows

    card = DatasetCard.load(to / "README.md")
    assert card.data.license == "unknown" and card.data.source_datasets == ["CogComp/trec"]
    assert "synthetic" in card.data.tags and card.data.task_categories == ["text-classification"]
    assert card.data.size_categories == ["n<1K"]
    text = card.text
    teacher = record["cost"]["teacher"]
    assert f"## `{cell}`" in text and "**strategy** `new_question`" in text
    assert "**teacher** `simulated`" in text and f"teacher: {teacher['requests']} queries" in text  # the cost
    assert "prompts:" in text and "new_question:" in text  # the prompt templates and reply formats
    # as written, placeholders and all (the card was rendered as a template, which emptied them)
    assert "{{ question }}" in text and "{{ labels }}" in text
    assert "near_duplicate" in text and "python run.py " in text and "seed_ids (48)" in text


def test_a_cell_that_dropped_nothing_loads_with_its_empty_dropped_split(sweep, tmp_path):
    """An answer augmentation cell of the simulated teacher (all kept), or an oracle's: its folder had no
    shard for the empty split, and load_from_disk raised IndexError."""
    import shutil

    run = next(p.parent for p in sweep.glob("*/record.json") if (p.parent / "generated").is_dir())
    copy = tmp_path / "sweep" / "0"
    shutil.copytree(run, copy)
    for dropped in (copy / "generated").glob("dropped_*.jsonl"):
        dropped.unlink()
    assert export.main([str(tmp_path / "sweep"), "--to", str(tmp_path / "data")]) == 0
    (cell,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    saved = load_from_disk(str(cell))
    assert saved["dropped"].num_rows == 0 and saved["train"].num_rows > 0
    assert set(saved["dropped"].column_names) == set(export.DROPPED)


def test_bad_exports_are_one_line_and_leave_nothing(sweep, tmp_path, capsys, monkeypatch):
    finetune = next(p.parent for p in sweep.glob("*/record.json") if not (p.parent / "generated").is_dir())
    cases = [
        ([str(tmp_path / "nowhere"), "--to", str(tmp_path / "a")], "is not a folder"),
        ([str(tmp_path), "--to", str(tmp_path / "b")], "holds no run"),
        ([str(finetune), "--to", str(tmp_path / "c")], "no generated data"),
    ]
    (tmp_path / "file").write_text("")
    cases.append(([str(sweep), "--to", str(tmp_path / "file" / "d")], "is not a writable folder"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cases.append(([str(sweep), "--to", str(tmp_path / "e"), "--push-to-hub", "me/data"], "HF_TOKEN"))
    for argv, said in cases:
        assert export.main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written
    full = tmp_path / "full"
    (full / "mine").mkdir(parents=True)
    assert export.main([str(sweep), "--to", str(full)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert [p.name for p in full.iterdir()] == ["mine"]
    assert export.main([str(sweep), "--to", str(full), "--overwrite"]) == 0
    assert (full / "README.md").is_file() and not (full / "mine").exists()


def test_every_committed_dataset_loads_whole():
    """results/*/dataset: every cell folder loads with load_from_disk, its empty splits too."""
    from tests.conftest import REPO

    cells = sorted(p.parent for p in REPO.glob("results/*/dataset/*/dataset_dict.json"))
    assert cells
    for cell in cells:
        saved = load_from_disk(str(cell))
        assert set(saved) == {"train", "dropped"} and saved["train"].num_rows + saved["dropped"].num_rows > 0


def test_every_committed_dataset_card_shows_its_prompt_templates_verbatim():
    """results/*/dataset/README.md: each cell's prompt templates as its record holds them, placeholders
    and all (a card rendered as a Jinja template had emptied them: 'The task:  The labels are: .')."""
    import yaml

    from tests.conftest import REPO

    cards = sorted(REPO.glob("results/*/dataset/README.md"))
    assert cards
    for card in cards:
        records = [json.loads(p.read_text()) for p in (card.parent.parent / "records").glob("*.json")]
        by_command = {"python run.py " + " ".join(r["overrides"]): r for r in records}
        for section in re.split(r"(?m)^(?=## `)", card.read_text())[1:]:
            command = re.search(r"- \*\*rerun\*\* `(python run\.py [^`]*)`", section).group(1)
            shown = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))["prompts"]
            kind = by_command[command]["config"]["task"].get("kind", "classification")
            held = by_command[command]["config"]["strategy"]["prompts"]
            assert shown == {step: t.get(kind, t) for step, t in held.items()}, (card, command)
