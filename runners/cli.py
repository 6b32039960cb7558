"""The command line: `synthbench [group=option ...] [key=value ...]` once installed, `python run.py ...` in a
checkout (the same app), or `-m` to sweep a grid."""

import os
import sys

# tqdm reads its defaults from the environment once, at import: the libraries' bars (lm-eval's, datasets')
# stay off; the suite's own bars pass `disable=` themselves and show on a terminal (bench/console.py)
os.environ.setdefault("TQDM_DISABLE", "1")

import hydra
from hydra.core.plugins import Plugins
from omegaconf import DictConfig

from bench import interrupts
from bench.config import check_yaml_syntax, conf_dir
from bench.config_store import register_configs
from bench.errors import BenchError, Interrupted
from hydra_plugins.synthbench_launchers.slurm_launcher import SlurmLauncher

register_configs()
# hydra/launcher=slurm; Hydra's plugin scan misses it in an editable install, so it is named here too
Plugins.instance().register(SlurmLauncher)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> None:
    from runners import cell  # after Hydra parsed the command line: --help stays instant

    with interrupts.stoppable():  # Ctrl-C and a scheduler's SIGTERM: one path (bench/interrupts.py)
        status = cell.run(cfg)
        interrupts.raise_if_stopped()  # a signal a finalizer swallowed after the last check
    if status:
        sys.exit(status)


def main() -> None:
    try:  # Hydra would answer a YAML syntax error with a parser traceback
        check_yaml_syntax(sys.argv[1:], conf_dir())
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        app()
    except KeyboardInterrupt as interrupted:  # Ctrl-C: one line, not a traceback from wherever it landed
        said = str(interrupted) if isinstance(interrupted, Interrupted) else (
            "interrupted: nothing half-written is left; every cell, stage and teacher answer finished so "
            "far is stored, and the same command reuses them: run it again to resume")
        print(f"\n{said}", file=sys.stderr)
        sys.exit(130)
