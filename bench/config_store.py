"""Hydra's ConfigStore, filled before any config is composed: the schema of the whole config
(bench/config.py BenchConfig), each strategy class's settings schema (bench/strategies: derived from the
class, `- /schema/strategy/<name>@_here_` in its YAML) and the resolvers the YAMLs use."""

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from bench.config import BenchConfig
from bench.model_store import offline_or_hub
from bench.strategies import registered, settings_schema


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="bench_schema", node=BenchConfig)
    for name, cls in registered().items():  # a strategy's schema comes from its class
        store.store(group="schema/strategy", name=name, node=settings_schema(cls))
    # ${offline_or_hub:<hub id>}: the copy `python -m runners.fetch_models` made, else the Hub id
    OmegaConf.register_new_resolver("offline_or_hub", offline_or_hub, replace=True)
    # ${gpus_or_none:${compute.gpus}}: the SLURM launcher asks no GPU at all for a CPU cell (a partition
    # without GPUs refuses --gpus-per-node=0 as an invalid GRES)
    OmegaConf.register_new_resolver("gpus_or_none", lambda gpus: gpus or None, replace=True)
