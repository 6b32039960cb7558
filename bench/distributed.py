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
