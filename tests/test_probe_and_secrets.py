"""The teacher probe end to end, through the real config, an HTTP server and the run record, and a
planted API key that must reach the server and nothing else."""

import json
import subprocess
import sys

import pytest

from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import DATA_DIR, REPO


def probe(tmp_path, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "runners.probe_teacher", f"hydra.run.dir={tmp_path / 'run'}",
         f"cache_path={tmp_path / 'cache.sqlite'}", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**_base_env(), "BENCH_DATA_DIR": str(DATA_DIR), "WANDB_MODE": "offline", **env},
    )


def _base_env():
    import os

    return {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}


def test_the_api_key_reaches_the_server_and_no_file_log_or_wandb_run(tmp_path):
    secret = "sk-planted-" + "7" * 40
    with LocalChatServer(faults=["429", "500"]) as server:
        result = probe(tmp_path, "teacher=openai", f"teacher.backend.base_url={server.base_url}",
                       "teacher.backend.model=local", "teacher.backoff_s=0.01", "seed_set.size=6",
                       "logger=wandb", OPENAI_API_KEY=secret)
        assert result.returncode == 0, result.stderr[-2000:]
        assert server.authorization == [f"Bearer {secret}"] * 8  # 6 questions + 2 retried faults
    usage = json.loads((tmp_path / "run" / "teacher_usage.json").read_text())
    assert usage["teacher"]["requests"] == 6 and usage["teacher"]["faults"] == {"429": 1, "500": 1}
    assert len((tmp_path / "run" / "generations.jsonl").read_text().splitlines()) == 6
    assert secret not in result.stdout + result.stderr
    written = [p for p in (tmp_path).rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in written) and len(written) > 10
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


def test_a_rerun_is_served_from_the_cache(tmp_path):
    args = ("teacher=simulated", "seed_set.size=12", "logger=none")
    assert probe(tmp_path, *args).returncode == 0
    second = probe(tmp_path, *args)
    assert "12 correct, 12 answered" in second.stdout and "0 queries (12 cached)" in second.stdout


@pytest.mark.slow
def test_a_key_a_server_echoes_back_is_scrubbed_from_every_line_file_and_wandb_field(tmp_path):
    """An Azure-style key (32 hex digits: no key shape to recognise) echoed in a 400's error body, by one
    request of a run that goes on, then by every request of one that stops: gone from everything written."""
    secret = "3fa9c1" + "0b7d" * 6 + "e2"
    outcomes = []
    for number, faults in enumerate((["echo_auth"], ["echo_auth"] * 6)):
        with LocalChatServer(faults=faults) as server:
            outcomes.append(probe(tmp_path / str(number), "teacher=openai", "teacher.max_attempts=1",
                                  f"teacher.backend.base_url={server.base_url}",
                                  "teacher.backend.model=local", "seed_set.size=6", "logger=wandb",
                                  OPENAI_API_KEY=secret))
            assert server.authorization[0] == f"Bearer {secret}"
    assert [o.returncode for o in outcomes] == [0, 2], outcomes[1].stderr[-2000:]
    assert "the api-key header was [redacted]" in outcomes[1].stderr  # the error line, scrubbed
    usage = json.loads((tmp_path / "0" / "run" / "teacher_usage.json").read_text())
    assert "the api-key header was [redacted]" in usage["teacher"]["fault_examples"]["400"]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in written) and any(p.suffix == ".log" for p in written)
    for outcome in outcomes:
        assert secret not in outcome.stdout + outcome.stderr
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
