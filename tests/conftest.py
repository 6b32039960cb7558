import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bench.config import validated
from bench.config_store import register_configs

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
# Small enough for seconds on two CPU cores; every test composes the real configs with these.
QUICK = ["seed_set.size=48", "train.epochs=1", "eval.limit=24", "logger=none",
         "student.architecture.num_hidden_layers=1", "student.tokenizer_vocab_size=600"]

register_configs()

if os.environ.get("PYTEST_XDIST_WORKER"):
    # several workers share the cores: one OpenMP thread each (the processes they start inherit it), or
    # torch's threads spin against each other (a job ran 5x slower next to another worker)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The slow tests first, the slowest of all (the default job) leading: the two workers then end
    together, rather than one waiting while the other runs a long test it drew last."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 item.name != "test_the_default_job_as_a_user_sees_it"))


@pytest.fixture(autouse=True)
def own_stores(tmp_path, monkeypatch):
    """Each test its own generation cache, results store and stage store: nothing carries over."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "stores"))


@pytest.fixture
def user_conf(tmp_path):
    """`write("task/x.yaml", body)` puts a user's YAML in a config folder of the test's own and returns
    the override that adds it to Hydra's search path: the repo's conf/ is never written."""
    root = tmp_path / "user_conf"

    def write(relative: str, body: str) -> str:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
        return f"hydra.searchpath=[file://{root}]"

    return write


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "SOURCES.md").is_file():
        pytest.fail(f"no task data at {DATA_DIR}: set BENCH_DATA_DIR to the shared/data folder")
    return DATA_DIR


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"data_dir={DATA_DIR}", *overrides])


def typed_config(*overrides: str):
    return validated(compose_config(*overrides))


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 600, **env_vars: str) -> subprocess.CompletedProcess:
    """`python run.py ARGS` as a user runs it, W&B kept offline and inside the test's folders."""
    env = {**os.environ, "BENCH_DATA_DIR": str(DATA_DIR), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           **env_vars}
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def new_question_sweep(where: Path, ratios: str) -> Path:
    """A real tiny sweep of fine-tuning and New Question (simulated teacher) on TREC at the budget ratios
    given, with a strict near-duplicate threshold so some generated questions are dropped with a reason:
    what the export and the report page are tested on. Returns the sweep folder."""
    result = run_cli("-m", *QUICK, "strategy=finetune,new_question", "budget=ratio", f"budget.ratio={ratios}",
                     "strategy.filters.near_duplicate_rouge_l=0.5", f"hydra.sweep.dir={where / 'sweep'}",
                     f"store_dir={where / 'store'}", f"cache_path={where / 'cache.sqlite'}", cwd=where)
    assert result.returncode == 0, result.stderr[-2000:]
    return where / "sweep"


def missing(why: str) -> None:
    """A server a test needs is not here: skipped, except in CI (BENCH_REQUIRE_SERVERS), where it fails."""
    if os.environ.get("BENCH_REQUIRE_SERVERS"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server of the test session's own (tests/postgres_server.py), on 127.0.0.1 at a
    free port; its URL without a database."""
    from tests.postgres_server import PostgresServer

    try:
        server = PostgresServer()
    except RuntimeError as why:
        missing(str(why))
    with server:
        yield server.url


@pytest.fixture
def postgres_url(postgres_server):
    """A database of the test's own on the session's server."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"


@pytest.fixture(scope="session")
def slurm():
    """A real one-node SLURM cluster of the test session's own (tests/slurm_cluster.py), partition `cpu`."""
    from tests import slurm_cluster

    try:
        cluster = slurm_cluster.start()
    except RuntimeError as why:
        missing(str(why))
    try:
        yield cluster
    finally:
        slurm_cluster.stop(cluster)
