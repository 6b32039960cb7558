"""Offline copies of Hub models. `python -m runners.fetch_models` materialises a model the suite knows
how to get without the Hub (runners/model_sources.yaml) as an ordinary Hugging Face folder under
`$BENCH_MODELS_DIR/<hub id>` (default ~/.cache/synthbench/models). A config names such a model as
`${offline_or_hub:<hub id>}`: the local folder when it has been fetched, else the Hub id, so the same
preset runs offline here and from the Hub elsewhere. A folder appears only complete (it is renamed
into place once converted and checked), so its presence is the whole test."""

import os
from pathlib import Path


def models_dir() -> Path:
    return Path(os.environ.get("BENCH_MODELS_DIR") or Path.home() / ".cache" / "synthbench" / "models")


def local_copy(hub_id: str) -> Path:
    return models_dir() / hub_id


def offline_or_hub(hub_id: str) -> str:
    """The fetched folder of `hub_id` if there is one, else `hub_id` itself (from_pretrained's Hub path)."""
    folder = local_copy(hub_id)
    return str(folder) if (folder / "config.json").is_file() else hub_id


def hub_id_of(name: str) -> str:
    """A model's name for people: the Hub id of a fetched copy (its path differs between machines)."""
    try:
        return Path(name).relative_to(models_dir()).as_posix()
    except ValueError:
        return name
