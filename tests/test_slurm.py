"""The grid on a real SLURM cluster (one node, started by the test session: tests/slurm_cluster.py),
through `hydra/launcher=slurm` exactly as a user types it, against a teacher server that counts what it
is paid for:

- a 4-cell grid runs as one array job and its records equal the local launcher's;
- a task requeued (`scontrol requeue`, as pre-emption does) and a task sent the time limit's SIGUSR2
  (submitit requeues it) resume from the stores: no teacher request paid twice, no stage trained twice;
- a task cancelled (`scancel`) is named in one line, and the same command reruns only that cell;
- one cell on two SLURM tasks is two torch.distributed ranks (gloo) writing one record;
- requests the cluster can never run are refused in one line each, with nothing stored."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.store import find_records
from runners.benchmarks.local_server import LocalChatServer
from tests import test_faults as faults
from tests.conftest import QUICK, REPO
from tests.test_faults import paid, teacher_reply

pytestmark = pytest.mark.slow

# CPU cells of one core each (two run at once on the test node), one thread: the same stage keys on the
# cluster and under the local launcher
CPU_CELL = ("compute=cpu", "compute.cpus_per_process=1", "compute.memory_gb=2", "compute.threads=1")
GRID = ("strategy=llm2llm_quick,answer_augmentation", "budget=ratio", "budget.ratio=1", "train.epochs=0.5")


def command(server: LocalChatServer, sweep_dir: Path, *extra: str, slurm: bool = True, partition: str = "cpu",
            cell: tuple = CPU_CELL) -> list:
    return [sys.executable, str(REPO / "run.py"), "-m", *QUICK, *cell, "teacher=openai",
            f"teacher.backend.base_url={server.base_url}", "teacher.backend.api_key_env=null",
            "teacher.backend.model=local", f"hydra.sweep.dir={sweep_dir}",
            *(("hydra/launcher=slurm", f"hydra.launcher.partition={partition}") if slurm else ()), *extra]


def environment(cluster, stores: Path) -> dict:
    return {**faults.environment(stores), "SLURM_CONF": cluster.env["SLURM_CONF"]}


def sweep(cluster, server, sweep_dir: Path, stores: Path, *extra: str, slurm: bool = True,
          status: int = 0) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    result = subprocess.run(command(server, sweep_dir, *extra, slurm=slurm), cwd=sweep_dir.parent,
                            env=environment(cluster, stores), capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-3000:]
    result.seconds = time.perf_counter() - started
    return result


def results(sweep_dir: Path) -> dict:
    """Per cell (by its overrides, the server's address left out): what it computed."""
    return {
        " ".join(o for o in r["overrides"] if "base_url" not in o): (
            [(i["iteration"], i["train_examples"], i["test_acc"]) for i in r["iterations"]],
            r["metrics"]["final/test_acc"],
        )
        for r in find_records(sweep_dir)
    }


def stages_stored(stores: Path) -> int:
    return len(list((stores / "stages").glob("*/result.json")))


def test_a_grid_runs_as_a_real_array_job_and_equals_the_local_launchers(slurm, tmp_path):
    grid = (*GRID, "seed_set.seed=0,1")
    with LocalChatServer(reply=teacher_reply) as server:
        local = sweep(slurm, server, tmp_path / "local", tmp_path / "local-stores", *grid, slurm=False)
        paid_locally = paid(server)
        on_slurm = sweep(slurm, server, tmp_path / "slurm", tmp_path / "slurm-stores", *grid)
        paid_on_slurm = paid(server) - paid_locally
    assert "submitted array job" in on_slurm.stdout and "4 cells ran, 0 skipped" in on_slurm.stdout
    assert len(list((tmp_path / "slurm" / ".submitit").glob("*_[0-3]"))) == 4  # one array, a task per cell
    assert len(results(tmp_path / "local")) == 4
    assert results(tmp_path / "slurm") == results(tmp_path / "local")
    assert paid_on_slurm == paid_locally > 0
    assert (tmp_path / "slurm" / "report" / "report.md").is_file()
    print(f"\n4-cell grid: local launcher {local.seconds:.1f} s, SLURM array job {on_slurm.seconds:.1f} s")


def task_of(cluster, cell: int, state: str = "RUNNING") -> str | None:
    """The array task of cell `cell` while it is in `state`."""
    return next((task for task, now, _ in cluster.jobs() if task.endswith(f"_{cell}") and now == state), None)


def test_requeued_and_timed_out_tasks_resume_paying_and_training_nothing_twice(slurm, tmp_path):
    with LocalChatServer(reply=teacher_reply) as server:
        sweep(slurm, server, tmp_path / "reference", tmp_path / "reference-stores", *GRID)
        paid_uninterrupted = paid(server)
        running = subprocess.Popen(command(server, tmp_path / "requeued", *GRID,
                                           "hydra.launcher.array_parallelism=1"),  # one cell at a time
                                   cwd=tmp_path, env=environment(slurm, tmp_path / "stores"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # cell 0 (LLM2LLM) pre-empted while it trains its second stage: the first is stored, the
        # teacher's answers cached; cell 1 (answer augmentation) sent SIGUSR2 as at its time limit while
        # it trains on its generated data (iteration 1): its answers are cached
        for cell, stopped_how in ((0, ("scontrol", "requeue")), (1, ("scancel", "--signal=USR2"))):
            training = tmp_path / "requeued" / str(cell) / "iteration_1" / "trainer"
            slurm.wait_for(lambda c=cell, t=training: t.exists() and task_of(slurm, c), 300,
                           f"cell {cell} training")
            slurm.run(*stopped_how, task_of(slurm, cell))
            requeued = slurm.wait_for(lambda c=cell: task_of(slurm, c, "PENDING"), 60,
                                      f"cell {cell} requeued")
            # SLURM holds a requeued job ~2 min before it may start again (BeginTime): not in a test
            slurm.run("scontrol", "update", f"JobId={requeued}", "StartTime=now")
        stdout, stderr = running.communicate(timeout=600)
        paid_requeued = paid(server) - paid_uninterrupted
    assert running.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert results(tmp_path / "requeued") == results(tmp_path / "reference")
    assert paid_requeued == paid_uninterrupted  # no request paid twice, counted at the server
    assert stages_stored(tmp_path / "stores") == stages_stored(tmp_path / "reference-stores")
    records = {r["strategy"]: r for r in find_records(tmp_path / "requeued")}
    assert records["llm2llm"]["stages"]["reused"] >= 1  # the requeued task took its first stage back
    print(f"\nrequeued grid: {paid_requeued} requests paid (uninterrupted: {paid_uninterrupted}), "
          f"{stages_stored(tmp_path / 'stores')} stages stored, LLM2LLM's stages "
          f"{records['llm2llm']['stages']}")
    logs = "".join(p.read_text() for p in (tmp_path / "requeued" / ".submitit").rglob("*_log.*"))
    assert "interrupted: nothing half-written is left" in logs  # the pre-empted task said so, once
    assert "Requeued job" in logs  # submitit requeued the timed-out one


def test_a_cancelled_task_is_named_in_one_line_and_the_same_command_runs_only_it(slurm, tmp_path):
    with LocalChatServer(reply=teacher_reply) as server:
        running = subprocess.Popen(command(server, tmp_path / "first", *GRID), cwd=tmp_path,
                                   env=environment(slurm, tmp_path / "stores"), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        slurm.run("scancel", slurm.wait_for(lambda: task_of(slurm, 1), 300, "cell 1 running"))
        stdout, stderr = running.communicate(timeout=600)
        assert running.returncode == 1, stderr[-3000:]
        failed = [line for line in stdout.splitlines() if line.strip().startswith("failed:")]
        assert len(failed) == 1 and "strategy=answer_augmentation" in failed[0] and "CANCELLED" in failed[0]
        rerun = sweep(slurm, server, tmp_path / "again", tmp_path / "stores", *GRID)
    assert "1 cells ran, 1 skipped (already done), 0 failed" in rerun.stdout


def test_a_cell_on_two_slurm_tasks_is_two_ranks_writing_one_record(slurm, tmp_path):
    with LocalChatServer(reply=teacher_reply) as server:
        sweep(slurm, server, tmp_path / "sweep", tmp_path / "stores", "strategy=llm2llm_quick",
              "compute.processes=2", "compute.memory_gb=6", "train.batching=padded")
        asked = paid(server)
    records = find_records(tmp_path / "sweep")
    assert len(records) == 1 and records[0]["status"] == "done"
    assert records[0]["provenance"]["processes"] == 2
    assert (tmp_path / "sweep" / "0" / "rank_1").is_dir()  # the follower computed the stages too
    assert asked == records[0]["cost"]["teacher"]["requests"]  # rank 0 alone asked the teacher
    assert len(list((tmp_path / "sweep" / ".submitit").rglob("*_result.pkl"))) == 2  # both tasks ended well


@pytest.mark.parametrize("partition, cell, said", [
    ("gpu", CPU_CELL, "the cluster has no partition 'gpu' (it has cpu, short): set hydra.launcher.partition"),
    ("cpu", ("compute=1gpu", "compute.cpus_per_process=1", "compute.memory_gb=2"),
     "partition cpu has no GPUs (no node lists a gpu GRES) and the cells ask 1: run them with compute=cpu"),
    ("cpu", ("compute=cpu", "compute.memory_gb=100000"),
     "no node of partition cpu can hold a cell's request"),
    ("cpu", ("compute=cpu", "compute.processes=3", "compute.cpus_per_process=1"),
     "no node of partition cpu can hold"),
    ("cpu", (*CPU_CELL, "hydra.launcher.constraint=nosuchfeature"), "the cluster refused the array job:"),
    ("short", CPU_CELL, "SLURM holds the cells pending for a reason that never clears (Partition"),
    ("cpu", CPU_CELL, "sbatch is not on PATH: hydra/launcher=slurm submits from a SLURM login node"),
])
def test_requests_the_cluster_cannot_run_are_refused_in_one_line_storing_nothing(slurm, tmp_path, partition,
                                                                                 cell, said):
    env = environment(slurm, tmp_path / "stores")
    if said.startswith("sbatch is not on PATH"):
        env["PATH"] = os.path.dirname(sys.executable)  # python, and no SLURM command
    with LocalChatServer(reply=teacher_reply) as server:
        result = subprocess.run(command(server, tmp_path / "sweep", "strategy=finetune", partition=partition,
                                        cell=cell), cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and said in last, last
    assert not (tmp_path / "stores" / "cells").exists() or not any((tmp_path / "stores" / "cells").iterdir())
    assert not slurm.jobs()  # nothing left queued
