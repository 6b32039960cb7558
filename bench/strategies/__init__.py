"""Strategies: how the seed set becomes training data. One class a strategy (its settings are its
dataclass fields, bench/strategies/base.py), one YAML in conf/strategy/ naming it and setting what differs
from its defaults. Everything else is derived from the class here: the structured-config schema Hydra
checks a strategy's keys and types with, the effective settings a cell saves, the strategy object."""

import importlib
import logging
import pkgutil
from dataclasses import MISSING, field, fields, is_dataclass, make_dataclass
from functools import cache

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from bench.config import check
from bench.errors import BenchError, first_line
from bench.strategies.base import STRATEGIES, Strategy

log = logging.getLogger(__name__)


@cache
def _import_package() -> None:
    """Import this package's modules, once: defining their classes registers them."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def registered() -> dict[str, type[Strategy]]:
    """Every strategy class of this package, and any other already imported (a user's own, once its
    module is)."""
    _import_package()
    return dict(STRATEGIES)


@cache
def settings_schema(cls: type[Strategy]) -> type:
    """The structured config of a strategy's settings: its fields with their types and defaults, and
    `_target_`. Hydra checks keys and types against it when it composes (`- /schema/strategy/<name>@_here_`
    in the strategy's YAML); its `__post_init__` builds the strategy once, so the ranges fail when the
    config is validated, before anything runs."""
    specs = [("_target_", str, field(default=f"{cls.__module__}.{cls.__qualname__}"))]
    for f in fields(cls):
        default = field(default=f.default) if f.default is not MISSING else \
            field(default_factory=f.default_factory)
        specs.append((f.name, f.type, default))

    def __post_init__(self):
        cls(**{f.name: getattr(self, f.name) for f in fields(cls)})

    schema = make_dataclass(f"{cls.__name__}Settings", specs, namespace={"__post_init__": __post_init__})
    schema.__module__ = __name__  # a pickled config names it here: __getattr__ finds it in any process
    return schema


def __getattr__(name: str):
    """`bench.strategies.<Class>Settings`: the schema a pickled config's strategy node names (a launcher's
    worker, a SLURM task unpickling its job), derived again from its class in this process."""
    if name.endswith("Settings"):
        for cls in registered().values():
            if f"{cls.__name__}Settings" == name:
                return settings_schema(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def strategy_class(target: str | None) -> type[Strategy]:
    """The class `strategy._target_` names."""
    if not target:
        raise BenchError("strategy._target_ is not set: a strategy YAML (conf/strategy/<name>.yaml) names "
                         "its class, e.g. _target_: bench.strategies.llm2llm.LLM2LLM")
    try:
        cls = get_class(target)
    except (ImportError, AttributeError, ValueError) as error:  # hydra's: the import's own error said
        said = (str(error).splitlines() or [""])[1:2] or [first_line(error)]  # line 2: the import's error
        raise BenchError(f"strategy._target_={target} cannot be imported ({said[0]}): name a "
                         "class as module.Class, its module importable from here") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise BenchError(f"strategy._target_={target} is not a strategy: subclass "
                         "bench.strategies.base.Strategy (docs/strategies.md, 'Adding a strategy')")
    return cls


def effective_settings(node: DictConfig) -> DictConfig:
    """The strategy's settings in full: its class's defaults, under what the YAML and the command line
    set. An unknown key or a wrong type fails in one line naming it."""
    cls = strategy_class(node.get("_target_") if node is not None else None)
    schema = settings_schema(cls)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except ConfigKeyError as error:
        raise not_a_setting(cls, str(error.full_key or error.key)) from None
    except ValidationError as error:
        raise BenchError(f"strategy.{error.full_key or ''}: {first_line(error)}".replace(".:", ":")) from None
    # a key added with + on the command line lands in a typed node as well; converting would drop it
    unknown = sorted(set(merged) - {f.name for f in fields(schema)})
    if unknown:
        raise not_a_setting(cls, unknown[0])
    for f in fields(schema):
        if is_dataclass(f.type) and isinstance(merged[f.name], DictConfig):
            known = {g.name for g in fields(f.type)}
            check(not set(merged[f.name]) - known, f"strategy.{f.name}", sorted(set(merged[f.name]) - known),
                  f"has unknown keys: use {', '.join(sorted(known))}")
    return merged


def not_a_setting(cls: type[Strategy], key: str) -> BenchError:
    known = ", ".join(f.name for f in fields(cls))
    return BenchError(f"strategy.{key} is not a setting of {cls.name} ({cls.__module__}.{cls.__qualname__}); "
                      f"its settings: {known} (a new setting is a field of the class)")


def build_strategy(node: DictConfig) -> Strategy:
    """The strategy object `strategy._target_` names, with its settings checked."""
    settings = OmegaConf.to_object(effective_settings(node))
    cls = strategy_class(settings._target_)
    return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def ran_as(settings: dict, strategy: Strategy) -> bool:
    """Whether a record's strategy settings (its config's `strategy`) are `strategy`: its class, every
    setting equal."""
    try:
        return build_strategy(OmegaConf.create(settings)) == strategy
    except BenchError:  # a record of settings this version no longer reads: not this strategy
        return False


# what a strategy class declares for the report (bench/strategies/base.py): the columns the report's
# frame gets per cell, so the report selects cells by role, never by a strategy's name
REPORT_ROLES = ("family", "baseline", "rivals", "spends_budget", "iterative", "pretrains", "uses_teacher",
                "report_table")


def strategy_of(target: str | None, name: str) -> type[Strategy] | None:
    """The class of the strategy a record ran: by `strategy._target_`, or (for a record without one, or
    whose class can no longer be imported) by its name; None when neither finds it."""
    if target:
        try:
            return strategy_class(target)
        except BenchError as error:  # the class is gone: by name, if the registry has it
            log.warning("strategy %s is read by its name: %s", name, error)
    return registered().get(name)


def report_roles(target: str | None, name: str) -> dict:
    """The roles of the strategy a record ran, as the report's frame columns. A strategy whose class
    cannot be found is no baseline and has none: its cells are listed but judged against nothing."""
    cls = strategy_of(target, name)
    if cls is None:
        return {"family": name, "baseline": None, "rivals": False, "spends_budget": False, "iterative": False,
                "pretrains": False, "uses_teacher": True, "report_table": None, "report_title": None}
    roles = {role: getattr(cls, role) for role in REPORT_ROLES}
    table = roles.pop("report_table")
    return {**roles, "report_table": table and table[0], "report_title": table and table[1]}
