import datasets
import pytest

from bench.errors import BenchError
from bench.tasks import hub_records, load_task
from tests.conftest import typed_config

# (raw train records, test records, labels) of the original release files, per SOURCES.md
RELEASES = {
    "gsm8k": (7473, 1319, None),
    "trec": (5452, 500, {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}),
    "sst2": (67349, 872, {"negative", "positive"}),
    "snips": (13084, 700, {"AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
                           "SearchCreativeWork", "SearchScreeningEvent"}),
    "casehold": (662, 338, {"0", "1", "2", "3", "4"}),
}
CUES = {"gsm8k": "\n\nAnswer:", "trec": "\nClass:", "sst2": "\nSentiment:", "snips": "\nIntent:",
        "casehold": "\nAnswer:"}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_loads_the_release_files(name, data_dir):
    n_train, n_test, labels = RELEASES[name]
    data = load_task(typed_config(f"task={name}").task, str(data_dir))
    assert len(data.test) == n_test
    assert len(data.train) + data.dropped_test_overlap == n_train
    assert data.source == f"local:{data_dir}"
    for example in data.train[:50] + data.test[:50]:
        assert example.prompt.endswith(CUES[name])
        if labels:
            assert example.target == example.label and example.label in labels
    if labels:
        assert {example.label for example in data.test} == labels
    # nothing in the training pool repeats a test prompt
    assert not {e.prompt for e in data.train} & {e.prompt for e in data.test}


def test_trec_is_read_as_latin1(data_dir):
    data = load_task(typed_config("task=trec").task, str(data_dir))
    texts = [example.prompt for example in data.train]
    assert any("\u00f0" in text or "\u00e9" in text for text in texts)  # bytes such as 0xF0 decode
    assert data.train[0].prompt == "How did serfdom develop in and then leave Russia ?\nClass:"
    assert data.train[0].label == "DESC"
    assert data.train[0].record["fine_label"] == "manner"


def test_gsm8k_targets_are_worked_solutions(data_dir):
    data = load_task(typed_config("task=gsm8k").task, str(data_dir))
    first = data.train[0]
    # LLM2LLM's training prompt: its instruction, the question, a blank line, the cue
    instruction = "The following question is based on the following passage.\n\n"
    assert first.prompt.startswith(f"{instruction}Natalia sold")
    assert first.prompt.endswith("in April and May?\n\nAnswer:")
    assert first.target.endswith("#### 72") and first.label == "72"
    assert data.majority_rate < 0.05


def test_casehold_prompt_lists_the_five_holdings(data_dir):
    example = load_task(typed_config("task=casehold").task, str(data_dir)).test[0]
    for i in range(5):
        assert f"\n{i}: " in example.prompt


def test_majority_rate_of_trec(data_dir):
    data = load_task(typed_config("task=trec").task, str(data_dir))
    assert data.majority_rate == pytest.approx(138 / 500)  # DESC


def test_hub_records_map_class_ids_to_names():
    """The Hub path's own conversion, on a Hub-shaped split: ClassLabel ids become label names."""
    split = datasets.Dataset.from_dict(
        {"sentence": ["a fine film", "a dull film"], "label": [1, 0], "idx": [0, 1]},
        features=datasets.Features({"sentence": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["negative", "positive"]),
                                    "idx": datasets.Value("int32")}),
    )
    assert hub_records(split, {"sentence": "text"}) == [
        {"text": "a fine film", "label": "positive", "idx": 0},
        {"text": "a dull film", "label": "negative", "idx": 1},
    ]


def test_no_data_root_and_no_hub_is_a_clear_error():
    cfg = typed_config("task=trec").task
    cfg.hub = None
    with pytest.raises(BenchError, match="BENCH_DATA_DIR"):
        load_task(cfg, None)


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; without care the first column is '\\ufefftext'."""
    body = "text,label\nis it raining?,a\nplay a song,b\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    (tmp_path / "plain.csv").write_text(body)
    (tmp_path / "test.csv").write_text("text,label\nwhat time is it?,a\n")
    task = typed_config("task=trec").task
    loaded = {}
    for name in ("bom", "plain"):
        task.local.format, task.local.train, task.local.test, task.local.encoding = (
            "csv", f"{name}.csv", "test.csv", "utf-8")
        task.labels, task.target_column, task.text_column = ["a", "b"], "label", "text"
        task.doc_to_text = None
        loaded[name] = load_task(task, str(tmp_path))
    assert loaded["bom"].digest == loaded["plain"].digest
    assert loaded["bom"].train[0].record == {"text": "is it raining?", "label": "a"}


def test_a_field_of_5_mb_is_read_whole(tmp_path):
    """csv's own limit is 128 KB a field; a long document is data, not an error (training truncates it)."""
    (tmp_path / "train.csv").write_text("text,label\n" + "word " * 1_000_000 + ",a\nplain,b\n")
    (tmp_path / "test.csv").write_text("text,label\nwhat time is it?,a\n")
    task = typed_config("task=trec").task
    task.local.format, task.local.train, task.local.test = "csv", "train.csv", "test.csv"
    task.labels, task.target_column, task.text_column, task.doc_to_text = ["a", "b"], "label", "text", None
    data = load_task(task, str(tmp_path))
    assert [len(e.record["text"]) for e in data.train] == [5_000_000, 5]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_quoted_field_keeps_its_newlines(tmp_path, fmt):
    """A quoted field spanning lines (a spreadsheet cell with a line break) keeps its line break."""
    sep = "," if fmt == "csv" else "\t"
    (tmp_path / f"train.{fmt}").write_text(f'text{sep}label\n"first line\nsecond line"{sep}a\nplain{sep}b\n')
    (tmp_path / f"test.{fmt}").write_text(f"text{sep}label\nwhat time is it?{sep}a\n")
    task = typed_config("task=trec").task
    task.local.format, task.local.train, task.local.test = fmt, f"train.{fmt}", f"test.{fmt}"
    task.labels, task.target_column, task.text_column, task.doc_to_text = ["a", "b"], "label", "text", None
    data = load_task(task, str(tmp_path))
    assert [e.record["text"] for e in data.train] == ["first line\nsecond line", "plain"]
