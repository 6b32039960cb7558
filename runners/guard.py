"""A Hydra callback that refuses a config holding an API key before Hydra writes anything (`.hydra/`,
the sweep's multirun.yaml) and before any job starts: keys belong in the environment."""

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
