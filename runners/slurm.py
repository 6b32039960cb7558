"""hydra/launcher=slurm: Hydra's submitit launcher, made to say what a cluster does in one line.

Before submitting, the request (compute: GPUs, processes, CPUs and memory per cell) is checked against
what the partition offers (`sinfo`): a missing `sbatch`, a partition the cluster lacks, a GRES it lacks or
a request no node can hold is refused in one line naming the fix. After submitting, the array is watched
with `squeue` (and `sacct` where the cluster keeps accounting, else without it): a task pending for a
reason that can never clear (PartitionConfig, BadConstraints, ...) cancels the array with one line
rather than waiting without end; a task the cluster ended without a result (`scancel`, a node lost, out
of memory) becomes a failed cell record, which the sweep names at its end, so the same command reruns
only what is missing. A task pre-empted or requeued (`scontrol requeue`, submitit's requeue at the time
limit) is still in the queue and is waited for: it resumes from the stores. In the job, a SIGTERM takes
Ctrl-C's path (bench/interrupts.py) and ends the task with one line.

The class Hydra instantiates lives in hydra_plugins/synthbench_launchers (Hydra finds launchers only
there); the code is here."""

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from bench.errors import BenchError, first_line

log = logging.getLogger(__name__)

# squeue states of a task that is not over: it is queued, running, or on its way back (requeue)
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}
# pending reasons that no amount of waiting clears
NEVER = {"PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit", "InvalidAccount",
         "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxGRESPerJob", "QOSMaxMemoryPerJob",
         "QOSMaxNodePerJobLimit", "QOSMaxWallDurationPerJobLimit", "AccountNotAllowed", "QOSNotAllowed"}


def sh(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES field (`gpu:4`, `gpu:a100:4(S:0-1)`, `(null)`)."""
    total = 0
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu":
            total += int(fields[-1]) if fields[-1].isdigit() else 1
    return total


def check_request(params: dict) -> str:
    """The partition the cell's request goes to, after checking the cluster can ever run it; BenchError
    (one line, naming the fix) otherwise."""
    if not shutil.which("sbatch"):
        raise BenchError("sbatch is not on PATH: hydra/launcher=slurm submits from a SLURM login node; on "
                         "one machine use hydra/launcher=parallel (or the default, one cell after another)")
    listed = sh("sinfo", "-h", "-o", "%P|%a")
    if listed.returncode:
        raise BenchError(f"sinfo cannot reach the cluster ({first_line(listed.stderr or 'no answer')}); "
                         "check SLURM_CONF and that slurmctld is up (sinfo)")
    partitions = dict(line.split("|") for line in listed.stdout.split())
    default = next((name.rstrip("*") for name in partitions if name.endswith("*")), None)
    partition = params.get("partition") or default
    states = {name.rstrip("*"): state for name, state in partitions.items()}
    if partition not in states:
        raise BenchError(f"the cluster has no partition {partition!r} (it has {', '.join(sorted(states))}): "
                         "set hydra.launcher.partition to one of them")
    if states[partition] != "up":
        raise BenchError(f"partition {partition} is {states[partition]}, not up: pick another with "
                         "hydra.launcher.partition, or ask the admins")
    nodes = [line.split("|") for line in sh("sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G")
             .stdout.split()]
    offered = [(name, int(cpus.rstrip("+")), int(memory.rstrip("+")) / 1024, gpu_count(gres))
               for name, cpus, memory, gres in nodes]
    processes = params.get("tasks_per_node") or 1
    cpus = processes * (params.get("cpus_per_task") or 1)
    memory = params.get("mem_gb") or 0
    gpus = params.get("gpus_per_node") or 0
    if gpus and not any(node[3] for node in offered):
        raise BenchError(f"partition {partition} has no GPUs (no node lists a gpu GRES) and the cells ask "
                         f"{gpus}: run them with compute=cpu, or on a GPU partition "
                         "(hydra.launcher.partition)")
    if not any(c >= cpus and m >= memory and g >= gpus for _, c, m, g in offered):
        largest = max(offered, key=lambda node: (node[3], node[1], node[2]))
        raise BenchError(
            f"no node of partition {partition} can hold a cell's request ({processes} processes, "
            f"{cpus} CPUs, {memory:g} GB, {gpus} GPUs; its largest node {largest[0]} has {largest[1]} CPUs, "
            f"{largest[2]:.0f} GB, {largest[3]} GPUs): lower compute.cpus_per_process, compute.memory_gb or "
            "compute.processes (hydra.launcher.* overrides them), or use a partition with bigger nodes")
    return partition


def queue_states(array_id: str) -> dict[str, tuple[str, str]]:
    """task id (`1234_5`) -> (state, pending reason), for the tasks squeue still lists (recently ended
    ones included); where squeue no longer lists a task, sacct's state if the cluster keeps accounting."""
    listed = sh("squeue", "-h", "-r", "-t", "all", "-j", array_id, "-o", "%i|%T|%r")
    states = {}
    for line in listed.stdout.split("\n"):
        if line.count("|") == 2:
            task, state, reason = line.split("|")
            states[task] = (state, reason)
    return states


def accounted_state(task: str) -> str | None:
    """sacct's state of a task that left the queue; None where the cluster keeps no accounting."""
    found = sh("sacct", "-n", "-X", "-P", "-j", task, "-o", "State")
    return found.stdout.split()[0] if found.returncode == 0 and found.stdout.split() else None


class ClusterLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def __call__(self, *args, **kwargs) -> JobReturn:
        """In the job: the cell. Stopped by a signal (SIGTERM: pre-empted, cancelled, requeued), it says
        what the stores kept in one line and ends the task with status 130."""
        try:
            return super().__call__(*args, **kwargs)
        except KeyboardInterrupt as stopped:
            print(f"\n{stopped}", file=sys.stderr, flush=True)
            sys.exit(130)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        try:
            partition = check_request(self.params)
            jobs = self.submit(job_overrides, initial_job_idx, partition)
            return self.wait(jobs, job_overrides, initial_job_idx)
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    def submit(self, job_overrides, initial_job_idx: int, partition: str) -> list:
        import submitit
        from submitit.core.utils import FailedJobError

        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            key if key in generic else f"slurm_{key}": value for key, value in self.params.items()
            if key not in ("submitit_folder", "max_num_timeout") and value is not None
        } | {"slurm_partition": partition})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        arguments = []
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
            arguments.append((list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}",
                              Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*arguments, strict=True))
        except FailedJobError as error:  # sbatch answered with an error (its stderr): the cluster refused
            raise BenchError(f"the cluster refused the array job: {first_line(error)}; fix the request "
                             "(hydra.launcher.*: partition, account, qos, additional_parameters) and run "
                             "the command again") from None
        array = jobs[0].job_id.split("_")[0]
        logs = self.params["submitit_folder"].replace("%j", f"{array}_<cell>")
        print(f"submitted array job {array}: {len(jobs)} cells on partition {partition} (squeue -j {array}; "
              f"each cell's log in {logs})", flush=True)
        return jobs

    def wait(self, jobs: list, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """Each cell's JobReturn once its task has left the queue; one that left without a result gets a
        failed record. Polls quickly at first, then every 30 s at most."""
        from submitit.core.utils import pickle_load

        array, started = jobs[0].job_id.split("_")[0], time.monotonic()
        results: dict[int, JobReturn] = {}
        while len(results) < len(jobs):
            time.sleep(min(30.0, 0.5 + (time.monotonic() - started) / 20))
            states = queue_states(array)
            for index, job in enumerate(jobs):
                if index in results:
                    continue
                state, reason = states.get(job.job_id, (accounted_state(job.job_id) or "GONE", ""))
                if state == "PENDING" and reason in NEVER:
                    sh("scancel", array)
                    raise BenchError(f"SLURM holds the cells pending for a reason that never clears ({reason}"
                                     f", squeue -j {array}); cancelled: fix the request (compute.*, "
                                     "hydra.launcher.partition, account, qos) and run the command again")
                if state in ACTIVE:
                    continue
                overrides = list(job_overrides[index])
                outcome = pickle_load(job.paths.result_pickle) if job.paths.result_pickle.exists() else None
                if outcome is not None and outcome[0] == "success":
                    results[index] = outcome[1]
                    continue
                why = (f"raised {first_line(outcome[1].strip().splitlines()[-1])}" if outcome else
                       f"ended {state} without a result")
                results[index] = self.failed(overrides, initial_job_idx + index,
                                             f"SLURM task {job.job_id} {why} (log {job.paths.stderr})")
        return [results[index] for index in range(len(jobs))]

    def failed(self, overrides: list, number: int, error: str) -> JobReturn:
        """A cell whose task ended without a result: a failed record in its folder, unless the cell wrote
        its own, so the sweep's end names it and a rerun runs it again."""
        from bench.records import CellRecord

        run_dir = Path(str(self.config.hydra.sweep.dir)) / str(number)
        if not (run_dir / "record.json").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            CellRecord(cell_id=None, run_dir=str(run_dir), overrides=overrides, choices={}, status="failed",
                       error=error).write(run_dir / "record.json")
        log.error(f"cell {number} failed: {error}")
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)
