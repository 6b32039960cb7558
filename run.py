"""Entry point: `python run.py [group=option ...] [key=value ...]`, or `-m` to sweep a grid."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.config import register_configs
from bench.errors import BenchError

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from runners import pipeline  # after Hydra parsed the command line: --help stays instant

    try:
        pipeline.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
