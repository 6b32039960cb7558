"""The GPU check (runners/benchmarks/gpu_check.py), run on this CPU with a tiny student: every figure but
the GPU's own, written to its JSON; its packing for a machine without network, and its one-line errors."""

import contextlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pytest

from runners.benchmarks import gpu_check
from tests.conftest import REPO

TINY = ["student=tiny", "student.architecture.num_hidden_layers=1", "student.tokenizer_vocab_size=600",
        "eval.limit=4", "task.max_new_tokens=16"]


@pytest.mark.slow
def test_the_check_measures_training_memory_and_scoring_into_one_json(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(data_dir))
    out = tmp_path / "figures" / "gpu_check.json"
    figures = gpu_check.measure(3, out, TINY)
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    training, memory = figures["training"], figures["memory_gib"]
    assert training["steps"] == 3 and training["examples"] == 3 * 16  # train=scratch: batches of 16
    assert training["tokens_per_second"] > 0 and 0 < training["mfu"] < 1
    assert training["precision"] == "fp32" and "matmul peak" in training["against"]  # a CPU
    assert memory["measured_peak"] > 0
    assert 0 < memory["planned_at_the_batches_trained"] <= memory["planned_at_max_length"]
    hf, vllm = figures["scoring"]
    assert hf["backend"] == "hf" and hf["examples"] == 4 and 0 <= hf["accuracy"] <= 1
    assert vllm["backend"] == "vllm"


def test_installing_from_a_folder_without_wheels_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "runners.benchmarks.gpu_check", "--from", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    expected = (f"error: {tmp_path / 'wheels'} holds no wheels: make it with --pack {tmp_path} where PyPI is "
                "reachable")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [expected]


def test_packing_without_the_tasks_release_files_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))  # no gsm8k/ in it
    assert gpu_check.main(["--pack", str(tmp_path / "pack")]) == 2
    assert not (tmp_path / "pack").exists()  # nothing downloaded


def test_the_wheels_it_carries_are_the_versions_tested_here():
    """A wheel the GPU machine gets is the version this suite's tests ran with, wherever it is installed."""
    binary, build = gpu_check.wanted()
    assert "lm-eval==0.4.13" in binary and "antlr4-python3-runtime==4.9.3" in build
    for requirement in binary + build:
        name, pinned = requirement.split("==")
        with contextlib.suppress(PackageNotFoundError):  # not here: needed only by a wheel beside it
            assert version(name) == pinned, name
