"""A grid across nodes through a real PostgreSQL server (started by the tests: tests/conftest.py): the
generation cache pays each request once across processes posing as hosts, a killed claimant's requests
are asked again once, two processes racing for one stage train it once; SQLite is refused on a network
filesystem; the server's password never reaches a file."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.errors import BenchError
from bench.store import find_records
from bench.teachers.cache import mount_type, refuse_network_filesystem
from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import QUICK, REPO, missing, run_cli
from tests.test_cache import client


def claims_held(cache_url: str) -> int:
    import psycopg

    with psycopg.connect(cache_url) as db:
        return db.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
                          "AND classid = 1 AND granted").fetchone()[0]


def test_two_hosts_asking_overlapping_requests_pay_for_each_once(postgres_url):
    """40 + 40 requests sharing 20, asked at once by two processes, each its own database session (as
    two hosts): 60 reach the server, each once."""
    with LocalChatServer(latency_s=0.05) as server:
        a, b = client(server, postgres_url, 0, 40), client(server, postgres_url, 20, 60)
        outputs = [p.communicate(timeout=300)[0].split() for p in (a, b)]
        paid = list(server.billable)
    assert sorted(paid) == sorted(f"q{i}" for i in range(60)), f"{len(paid)} paid, {len(set(paid))} distinct"
    answered, asked, _ = zip(*[map(int, out) for out in outputs], strict=True)
    assert answered == (40, 40) and sum(asked) == 60


def test_a_killed_claimants_requests_are_asked_again_once(postgres_url):
    with LocalChatServer() as server:
        server.hold(0)  # every request hangs: the first process dies holding its claims
        first = client(server, postgres_url, 0, 10)
        deadline = time.monotonic() + 120
        # its 4 requests in flight held by the server too (one read after the release would be billed)
        while (claims_held(postgres_url) < 10 or server.held < 4) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert claims_held(postgres_url) == 10 and server.held == 4
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        server.hold(None)
        # no lease to wait out: the server ended the dead session, and its locks with it
        second = client(server, postgres_url, 0, 10)
        assert second.communicate(timeout=300)[0].split()[:2] == ["10", "10"]
        assert sorted(server.billable) == sorted(f"q{i}" for i in range(10))  # each asked again, once
    assert claims_held(postgres_url) == 0


@pytest.mark.slow
def test_two_processes_racing_for_one_cell_run_it_once(postgres_url, tmp_path):
    args = [*QUICK, "strategy=finetune", f"cache_url={postgres_url}"]
    env = {**os.environ, "BENCH_CACHE_DIR": str(tmp_path / "shared"), "WANDB_MODE": "offline"}
    racing = [subprocess.Popen([sys.executable, str(REPO / "run.py"), *args,
                                f"hydra.run.dir={tmp_path / run}"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for run in ("run0", "run1")]
    for process in racing:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    records = [json.loads((tmp_path / f"run{n}" / "record.json").read_text()) for n in (0, 1)]
    # one ran the cell; the other waited for its claim on the cell, then skipped it
    assert sorted(bool(r["skipped"]) for r in records) == [False, True]
    assert sum(r["stages"]["trained"] for r in records if not r["skipped"]) == 1


@pytest.mark.slow
def test_two_cells_on_two_nodes_sharing_a_stage_train_it_once(postgres_url, tmp_path):
    """Fine-tuning and LLM2LLM at once: LLM2LLM's iteration 0 is the fine-tuning stage, claimed through
    the server, so one trains it and the other waits and reuses it."""
    env = {**os.environ, "BENCH_CACHE_DIR": str(tmp_path / "shared"), "WANDB_MODE": "offline"}
    racing = [subprocess.Popen([sys.executable, str(REPO / "run.py"), *QUICK, f"strategy={strategy}",
                                f"cache_url={postgres_url}", f"hydra.run.dir={tmp_path / strategy}"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
              for strategy in ("finetune", "llm2llm_quick")]
    for process in racing:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    records = [json.loads((tmp_path / s / "record.json").read_text()) for s in ("finetune", "llm2llm_quick")]
    finetune, llm2llm = (r["stages"] for r in records)
    assert all(r["provenance"]["claim_wait_s"] >= 0 for r in records)  # the one that waited says how long
    assert finetune["keys"][0] == llm2llm["keys"][0]
    assert finetune["trained"] + llm2llm["trained"] == len(set(finetune["keys"] + llm2llm["keys"]))


@pytest.mark.slow
def test_a_fault_soak_through_the_postgres_cache_pays_exactly_the_budget(postgres_url, tmp_path):
    from tests.test_faults import command, environment, paid, teacher_reply

    grid = ("strategy=answer_augmentation", "budget=ratio", "budget.ratio=2", "seed_set.seed=0,1,2",
            "train.epochs=0.5", "teacher.backend.timeout_s=3", "teacher.max_attempts=6",
            f"cache_url={postgres_url}")
    with LocalChatServer(reply=teacher_reply, fault_rate=0.3, seed=7) as server:
        result = subprocess.run(command(server, tmp_path / "soak", *grid), cwd=tmp_path, timeout=900,
                                env=environment(tmp_path / "stores"), capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        billed = paid(server)
    records = find_records(tmp_path / "soak")
    assert len(records) == 3 and all(r["status"] == "done" for r in records)
    assert all(b["paid"] <= 2 * 48 for r in records for b in r["cost"]["budget"])
    assert billed <= 3 * 2 * 48 and not (tmp_path / "stores" / "generations.sqlite").exists()


MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/vda / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
lustre@tcp:/scratch /scratch lustre rw 0 0
/dev/nvme0n1 /scratch/local xfs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


@pytest.mark.parametrize("path, kind", [("/home/me/cache/generations.sqlite", "nfs4"),
                                        ("/scratch/me/generations.sqlite", "lustre"),
                                        ("/scratch/local/generations.sqlite", "xfs"),
                                        ("/work/generations.sqlite", "ext4")])
def test_the_cache_folders_filesystem_is_read_from_the_mount_table(path, kind):
    from pathlib import Path

    assert mount_type(Path(path).parent, MOUNTS) == kind
    if kind in ("nfs4", "lustre"):
        with pytest.raises(BenchError, match=rf"is on a network filesystem \({kind}\).*cache_url=postgresql"):
            refuse_network_filesystem(Path(path), MOUNTS)
    else:
        refuse_network_filesystem(Path(path), MOUNTS)


def test_a_password_in_the_url_is_refused_and_pgpassword_is_scrubbed(tmp_path, monkeypatch):
    result = run_cli(*QUICK, "cache_url=postgresql://me:hunter2secret@db:5432/grid", cwd=tmp_path)
    assert result.returncode == 2 and "cache_url holds a password" in result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr
    from bench.secrets import redact

    monkeypatch.setenv("PGPASSWORD", "correct-horse-battery")
    assert redact("login failed for correct-horse-battery") == "login failed for [redacted]"


def test_an_unreachable_server_is_one_line(tmp_path):
    result = run_cli(*QUICK, "strategy=finetune", "cache_url=postgresql://bench@127.0.0.1:9/none",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "cannot connect to the PostgreSQL server at 127.0.0.1:9" in errors[0]


HOLD_A_CLAIM = """
import sys, time
from pathlib import Path
from bench.database import ClaimLocks
locks = ClaimLocks(Path(sys.argv[2]), sys.argv[1])
with locks.hold("stage", "the stage"):
    locks._session.execute("LISTEN wake")  # the server can send this session something unasked
    print("held", flush=True)
    time.sleep(600)
"""


def claim_free_after(url: str, limit_s: float) -> float | None:
    """Seconds until this session takes the claim on "the stage", polling; None if not within `limit_s`."""
    import psycopg

    from bench.database import NAMESPACES, lock_id

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as db:
        while time.monotonic() - started < limit_s:
            if db.execute("SELECT pg_try_advisory_lock(%s, %s)",
                          (NAMESPACES["stage"], lock_id("the stage"))).fetchone()[0]:
                return time.monotonic() - started
            time.sleep(0.5)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "data unacknowledged"])
def test_a_host_that_drops_off_the_network_gives_its_claims_back_within_a_minute(in_flight, tmp_path):
    """The holder's link goes down (no FIN, no RST): the server's keepalives, set for each session, end
    its session, and its claims, ~30 s later (without them the kernel's default: two hours). Where the
    server has sent data the lost host never acknowledged, the kernel retransmits instead of probing
    (~15 minutes): tcp_user_timeout ends that too."""
    from tests.netns import Host
    from tests.postgres_server import PostgresServer

    try:
        host = Host(3 if in_flight else 1).__enter__()  # its own subnet: the two cases may run at once
    except (RuntimeError, subprocess.CalledProcessError) as why:
        missing(f"no network namespace here (ip netns, as root): {why}")
    try:
        with PostgresServer(listen=("127.0.0.1", host.gateway), trust=(host.network,)) as server:
            remote = f"postgresql://bench@{host.gateway}:{server.port}/postgres"
            holding = [sys.executable, "-c", HOLD_A_CLAIM, remote, str(tmp_path)]
            holder = subprocess.Popen(host.command(holding), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            try:
                assert holder.stdout.readline().strip() == "held", holder.stderr.read()
                assert claim_free_after(f"{server.url}/postgres", 0) is None  # held
                host.cut()
                if in_flight:
                    import psycopg

                    with psycopg.connect(f"{server.url}/postgres", autocommit=True) as db:
                        db.execute("NOTIFY wake")  # sent to the lost host, never acknowledged
                waited = claim_free_after(f"{server.url}/postgres", 90)
            finally:
                holder.kill()
                holder.wait()
        assert waited is not None and waited <= 60, waited
        print(f"claim free {waited:.1f} s after the holder's link went down")
    finally:
        host.__exit__(None, None, None)


@pytest.mark.slow
def test_a_black_holed_server_fails_the_sweep_once_within_the_connect_timeout(tmp_path):
    """An address that never answers: one line for the whole sweep within SWEEP_CHECK_TIMEOUT_S, before
    any cell starts (each cell used to wait 30 s for it, saying nothing)."""
    from bench.database import SWEEP_CHECK_TIMEOUT_S
    from tests.netns import Host

    try:
        host = Host(2).__enter__()
        host.black_hole()
    except (RuntimeError, subprocess.CalledProcessError) as why:
        missing(f"no network namespace here (ip netns, as root): {why}")
    try:
        started = time.monotonic()
        result = run_cli("-m", *QUICK, "strategy=finetune", "replicate=0,1",
                         f"cache_url=postgresql://bench@{host.address}:5432/grid",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}", f"store_dir={tmp_path / 'store'}",
                         cwd=tmp_path)
        seconds = time.monotonic() - started
    finally:
        host.__exit__(None, None, None)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert f"cannot connect to the PostgreSQL server at {host.address}:5432" in errors[0]
    assert "timeout" in errors[0]
    assert not list(tmp_path.rglob("record.json")) and not (tmp_path / "store").exists()
    assert seconds < SWEEP_CHECK_TIMEOUT_S + 25, seconds  # the timeout, and Python's start
    print(f"sweep refused in {seconds:.1f} s")


def test_the_sweep_check_refuses_a_foreign_generations_table_in_one_line(postgres_url):
    import psycopg

    from bench.database import check_shared_store

    check_shared_store(postgres_url)  # an empty database: fine
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE generations (id int, payload text)")
    with pytest.raises(BenchError, match="holds a table 'generations' that is not the generation cache "
                                         r"\(columns id, payload\): name another database in cache_url"):
        check_shared_store(postgres_url)


@pytest.mark.parametrize("shared", [True, False], ids=["postgres", "file locks"])
def test_a_waiting_process_says_what_it_waits_for_and_whom(shared, postgres_url, tmp_path, monkeypatch,
                                                           caplog):
    """Once when it starts waiting, then every WAIT_REPORT_S; the wait is added up for the record."""
    import logging
    import socket
    import threading

    from bench import database

    monkeypatch.setattr(database, "WAIT_REPORT_S", 0.5)
    url = postgres_url if shared else None
    held, release = threading.Event(), threading.Event()

    def holder():
        with database.ClaimLocks(tmp_path, url).hold("stage", "0123456789abcdef0123"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    threading.Timer(1.3, release.set).start()
    before = database.ClaimLocks.waited_s
    with caplog.at_level(logging.INFO, logger="bench.database"), \
            database.ClaimLocks(tmp_path, url).hold("stage", "0123456789abcdef0123"):
        waited = database.ClaimLocks.waited_s - before
    thread.join()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"waiting for stage 0123456789abcdef claimed by {socket.gethostname()}, "
                               f"pid {os.getpid()}"), lines
    assert " since " in lines[0] and lines[0].endswith("UTC")
    assert len(lines) >= 2 and lines[1].startswith("still waiting for stage 0123456789abcdef") and \
        lines[1].endswith("s so far)"), lines
    assert 1.0 <= waited < 10


@pytest.mark.slow
def test_a_server_restart_mid_grid_is_waited_out_and_nothing_is_paid_twice(tmp_path):
    """`pg_ctl stop -m fast` while the grid's cells ask the teacher, started again 10 s later: the cells
    wait (each statement sent again on a new connection), the answers received meanwhile are stored once
    the server is back, and the grid ends with every cell done. Before: every running and later cell
    failed with the driver's AdminShutdown traceback, and 17 answers were paid again on the rerun."""
    from tests.postgres_server import PostgresServer
    from tests.test_faults import command, environment, paid, teacher_reply

    with PostgresServer() as database, LocalChatServer(reply=teacher_reply, latency_s=0.05) as teacher:
        url = f"{database.url}/postgres"
        grid = ["strategy=llm2llm_quick", "replicate=0,1,2,3"]
        sweep = subprocess.Popen(command(teacher, tmp_path / "sweep", *grid, f"cache_url={url}"),
                                 cwd=tmp_path, env=environment(tmp_path / "stores"), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while paid(teacher) < 10 and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        database.stop("fast")  # every session ended, as an administrator's restart does
        time.sleep(10)
        database.start()
        out, err = sweep.communicate(timeout=600)
        import psycopg

        with psycopg.connect(url) as db:
            stored = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        billed = paid(teacher)
    assert sweep.returncode == 0, err[-3000:]
    records = [json.loads(r.read_text()) for r in (tmp_path / "sweep").glob("*/record.json")]
    assert len(records) == 4, err[-3000:]
    assert all(r["status"] == "done" for r in records), [r.get("error") for r in records]
    assert "lost the PostgreSQL server" in out and "is back after" in out, out[-3000:]
    assert "Traceback" not in err
    assert billed == stored  # each answer paid once, and stored: none lost in the outage, none asked twice
    print(f"{billed} requests paid, {stored} answers stored, through a 10 s restart")
