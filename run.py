"""Entry point: `python run.py [group=option ...] [key=value ...]`, or `-m` to sweep a grid."""

import sys

import hydra
from omegaconf import DictConfig

from bench.config import register_configs

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from runners import cell  # after Hydra parsed the command line: --help stays instant

    status = cell.run(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
