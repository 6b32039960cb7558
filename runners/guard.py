"""Hydra callbacks that refuse a sweep before anything is written or submitted: a config holding an API
key (keys belong in the environment), a cluster sweep whose cells cannot fit their GPUs, and a shared
store (cache_url) that cannot be reached or written."""

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bench.secrets import typed_secrets


def refuse_typed_secrets(config: DictConfig) -> None:
    found = typed_secrets(OmegaConf.to_container(config, resolve=False))
    if found:  # Hydra's own copies of the command line (hydra.*) are named only when nothing else is
        found = [key for key in found if not key.startswith("hydra.")] or found
        print(f"error: {', '.join(found)} holds an API key (or a key where a variable's name belongs); "
              "a key in the config would be written to .hydra/, the records and W&B: export it as an "
              "environment variable and name that variable in teacher.backend.api_key_env", file=sys.stderr)
        sys.exit(2)


class RefuseTypedSecrets(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        refuse_typed_secrets(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        refuse_typed_secrets(config)


class RefuseUnfitCells(Callback):
    """On a cluster launcher (submitit), plan the sweep (runners/plan.py) and refuse it when a cell needs
    more memory than compute.gpus GPUs of compute.gpu_memory_gb hold: a job that would fail its first
    step hours into the queue fails here, with what would fit. compute.check_fit=false skips this."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if not ("submitit" in target or "slurm" in target.lower()) or not config.compute.check_fit:
            return
        from bench.errors import BenchError
        from runners.plan import plan

        try:
            unfit = [row for row in plan(list(config.hydra.overrides.task)) if not row["fits"]]
        except BenchError as error:
            print(f"error: planning the sweep: {error}", file=sys.stderr)
            sys.exit(2)
        if unfit:
            first = unfit[0]
            room = (f"{first['gpus']} GPU(s) of {first['gpu_memory_gib']:.0f} GiB" if first["gpus"] else
                    f"the {first['gpu_memory_gib']:.0f} GiB of memory a process gets (compute.memory_gb)")
            print(f"error: {len(unfit)} cells cannot fit {room} (e.g. {first['cell']}: "
                  f"{first['memory_gib']:.0f} GiB a process); it would fit with "
                  f"{first['instead']} (python -m runners.plan shows every cell; compute.check_fit=false "
                  "submits anyway)", file=sys.stderr)
            sys.exit(2)


class CheckSharedStore(Callback):
    """A sweep sharing a PostgreSQL server (cache_url) looks at it once, with a short timeout, before any
    cell starts: an unreachable, read-only or foreign database is one line, not a wait in every cell."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.get("cache_url"):
            return
        from bench.database import check_shared_store
        from bench.errors import BenchError

        try:
            check_shared_store(config.cache_url)
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
