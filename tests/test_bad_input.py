"""Bad input: one clear line naming the problem and the fix, a non-zero exit, no traceback."""

import pytest

from tests.conftest import QUICK, run_cli


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-1000:]
    return last


@pytest.mark.parametrize("group, bad", [("task", "nope"), ("student", "13b")])
def test_unknown_choice_lists_the_options(group, bad, tmp_path):
    result = run_cli(f"{group}={bad}", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"Could not find '{group}/{bad}'" in result.stderr
    assert "Available options" in result.stderr


def test_data_root_without_the_file(tmp_path):
    line = one_line_error(run_cli(*QUICK, f"data_dir={tmp_path}", cwd=tmp_path))
    assert f"data file {tmp_path}/trec/train_5500.label not found" in line and "BENCH_DATA_DIR" in line


@pytest.mark.parametrize("size, message", [
    ("99999", "seed_set.size=99999 exceeds the 5442 training examples of trec"),
    ("0", "seed_set.size=0 must be a positive number"),
    ("-3", "seed_set.size=-3 must be a positive number"),
])
def test_bad_seed_sizes(size, message, tmp_path):
    assert message in one_line_error(run_cli(*QUICK, f"seed_set.size={size}", cwd=tmp_path))


def test_task_yaml_missing_a_required_field(user_conf, tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nhello,a\n")
    searchpath = user_conf("task/pytest_nocue.yaml", f"""\
        name: pytest_nocue
        labels: [a]
        local: {{format: csv, train: {tmp_path}/d.csv, test: {tmp_path}/d.csv}}
    """)
    line = one_line_error(run_cli("task=pytest_nocue", searchpath, cwd=tmp_path))
    assert "task.cue is required" in line and "conf/task/" in line


def test_label_outside_the_label_set(user_conf, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nsunny today,weather\nbook a table,food\n")
    searchpath = user_conf("task/pytest_labels.yaml", f"""\
        name: pytest_labels
        cue: "Intent:"
        labels: [food]
        local: {{format: csv, train: {tmp_path}/train.csv, test: {tmp_path}/train.csv}}
    """)
    line = one_line_error(run_cli("task=pytest_labels", searchpath, cwd=tmp_path))
    assert "train record 0 of" in line and "train.csv" in line
    assert "label 'weather' is not in task.labels ['food']; add it to labels or fix the data" in line


def test_unreachable_student_checkpoint(tmp_path):
    line = one_line_error(run_cli(*QUICK, f"student.pretrained={tmp_path}/no-such-model", cwd=tmp_path))
    assert f"cannot load {tmp_path}/no-such-model" in line and "HF_TOKEN" in line


def test_hub_dataset_out_of_reach(tmp_path):
    """No data root: the task's Hub loader runs, and without the Hub says how to use local files."""
    result = run_cli(*QUICK, "data_dir=null", cwd=tmp_path, HF_HUB_OFFLINE="1")
    line = one_line_error(result)
    assert "task trec: could not load CogComp/trec from the Hub" in line and "BENCH_DATA_DIR" in line
