"""One cell on N processes: `torchrun --nproc_per_node N run.py ...`, `accelerate launch`, or N SLURM
tasks (hydra/launcher=slurm with compute.gpus=N). Rank 0 alone runs the strategy: it queries the teachers,
reads and writes the stores, the record, the generated data and W&B. The other ranks follow: for each
stage rank 0 computes, it sends them the stage's inputs; all ranks train it together (DDP, or FSDP
with compute.sharding=fsdp) and lm-eval scores the examples data-parallel, each rank its shard, gathered
on rank 0 and counted once. A single process (WORLD_SIZE unset or 1) skips all of this."""

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from bench.errors import BenchError

USER_OMP_THREADS = os.environ.get("OMP_NUM_THREADS", "")  # as the user set it, before use_cpu_threads


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    in_stage: bool = False  # rank 0 is inside a stage the other ranks share

    @property
    def main(self) -> bool:
        return self.rank == 0

    def send(self, command):
        """Rank 0's command to the followers (None: the cell is over); what a follower receives."""
        if self.world == 1:
            return command
        box = [command if self.main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def stage(self):
        """Marks a shared stage: a failure inside it leaves the followers inside a collective, where
        the launcher (torchrun, srun) ends them, so rank 0 must not also send them the end."""
        self.in_stage = True
        yield
        self.in_stage = False

    def release(self) -> None:
        """Rank 0 tells the followers the cell is over (they wait for the next stage otherwise)."""
        if self.world > 1 and self.main and not self.in_stage:
            self.send(None)


def from_environment() -> Ranks:
    """Join the process group torchrun / accelerate / SLURM describe, once per process."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from SLURM
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    if not torch.distributed.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())


def check_sharding(sharding: str, processes: int, ranks: Ranks) -> None:
    """compute.sharding=fsdp is refused where it would silently train unsharded: a process alone where
    compute.processes ranks were asked for."""
    if str(sharding) != "fsdp" or processes == 1 or ranks.world > 1:
        return
    raise BenchError(f"compute.sharding=fsdp shards over compute.processes={processes} ranks, but this "
                     f"process is alone: launch it with torchrun --nproc_per_node {processes} run.py ... "
                     "(or accelerate launch, or hydra/launcher=slurm), or set compute.sharding=none")


def cpu_threads(configured: int | None, launcher_workers: int | None = None) -> tuple[int, str]:
    """How many torch/OpenMP threads this process takes, and why. On a shared CPU, threads beyond the
    process's share of the cores spin (measured: 2x to 6x slower), so where several processes share this
    machine's cores — torchrun's or accelerate's local ranks, the parallel launcher's workers (n_jobs;
    -1: one per core) — each takes the cores it may run on (its affinity mask: taskset, SLURM's binding;
    a SLURM task's cpus_per_task)
    over their number. A process alone takes OMP_NUM_THREADS when set, else all its cores.
    compute.threads overrides all of it."""
    if configured:
        return configured, "compute.threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # a SLURM task has the CPUs it asked for, whether or not the cluster binds it to them (task/none)
    cores = min(cores, int(os.environ.get("SLURM_CPUS_PER_TASK", cores)))
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = cores if launcher_workers is not None and launcher_workers < 0 else (launcher_workers or 1)
    if ranks * workers > 1:  # the launchers' own OMP_NUM_THREADS (torchrun: 1) is not the user's choice
        return max(1, cores // (ranks * workers)), f"{cores} cores / {ranks * workers} processes"
    if USER_OMP_THREADS.isdigit() and int(USER_OMP_THREADS) > 0:
        return int(USER_OMP_THREADS), "OMP_NUM_THREADS"
    return cores, f"{cores} cores"


def use_cpu_threads(threads: int) -> None:
    """Size torch's pools, and OpenMP's in any process this one starts (a tokenizer, a data worker)."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    torch.set_num_threads(threads)


def cpu_threads_in_use() -> int | None:
    """The thread count a stage trained with, where it changes the result: on a CPU (None on a GPU)."""
    return None if torch.cuda.is_available() else torch.get_num_threads()
