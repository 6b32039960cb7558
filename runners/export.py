"""`python -m runners.export <run or sweep folder> --to DIR [--push-to-hub ORG/NAME]` (installed:
`synthbench-export ...`): the data a sweep generated as a Hugging Face dataset with a dataset card.

Per cell that generated data, two configs: `<cell>` (split `train`), one row per kept example (what the
student trained on beyond its seed set) beside the seed example it came from and the teacher's raw
reply; `<cell>-dropped` (split `dropped`), every reply that was not kept and why. DIR is laid out as a
dataset repository on the Hub: `README.md` (the card: how the data was made, per cell) and
`<cell>/{train,dropped}-00000-of-00001.parquet` (what `load_dataset(DIR, "<cell>")` and the Hub read);
beside them each cell's `datasets` copy with both splits, `<cell>/dataset_dict.json` and its arrow files
(`load_from_disk(DIR/<cell>)`). `--push-to-hub` uploads the card and the parquet files (private unless
`--public`; the token from `HF_TOKEN`)."""

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import yaml

from bench.errors import BenchError, first_line
from bench.model_store import hub_id_of
from bench.records import CellRecord
from bench.store import code_version, writable_folder
from bench.strategies import strategy_of

# a kept row's columns, in order: what it is, where it came from, who wrote it; then the fields the
# cell's strategy declares it writes (its class's `extra_fields`: a pre-training corpus's topic and style)
KEPT = ["id", "prompt", "target", "label", "iteration", "strategy", "source_id", "source_prompt",
        "source_target", "source_label", "teacher", "teacher_backend", "teacher_model", "sample_index",
        "cache_key", "teacher_reply", "question_by", "question_cache_key", "cell", "cell_id"]
DROPPED = ["iteration", "reason", "detail", "step", "source_id", "source_prompt", "source_label", "question",
           "reply", "cache_key", "cell", "cell_id"]
TASK_CATEGORY = {"classification": "text-classification", "math": "text-generation"}
# the teacher's terms where its provider sets them on generated data: the card names them
TERMS = {"openai": "OpenAI's terms of use apply to outputs of its models (https://openai.com/policies/terms-of-use)",
         "anthropic": "Anthropic's usage policy applies to outputs of its models "
                      "(https://www.anthropic.com/legal/aup)"}
DATA_SOURCES = Path(__file__).with_name("data_sources.yaml")


def run_folders(folder: Path) -> list[Path]:
    """The run folders under `folder` (itself one, or a sweep of them): each holds a record.json."""
    if (folder / "record.json").is_file():
        return [folder]
    return sorted((p.parent for p in folder.glob("*/record.json")), key=lambda p: (len(p.name), p.name))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cell_name(record: CellRecord, varying: set) -> str:
    """A config name the Hub accepts: the cell's strategy and teacher, then the overrides that differ
    between the folder's cells (paths left out): new_question-oracle-replicate_1."""
    said = [record.choices.get("strategy", record.strategy), record.choices.get("teacher", "")]
    for override in record.overrides:
        key, _, value = override.partition("=")
        if override in varying and key not in ("strategy", "teacher") and "/" not in value:
            said.append(value if key in ("task", "student") else f"{key}_{value}")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", "-".join(filter(None, said))).strip("_-") or "default"


def version_text(version: dict) -> str:
    """The suite's version as a card prints it: its commit (and whether the tree had changes) and digest."""
    commit = version.get("git_commit")
    return (f"commit {commit[:12]}{' with local changes' if version.get('git_dirty') else ''}, "
            if commit else "") + f"code digest {version.get('code_digest')}"


def computed_in(record: CellRecord, run_dir: Path | None = None) -> Path:
    """Where a cell's generated data is: its run folder, or for a skipped cell the run that computed it."""
    if record.skipped and record.first_run_dir:
        return Path(record.first_run_dir)
    return run_dir or Path(record.run_dir)


def cell_rows(record: CellRecord, run_dir: Path, name: str = "") -> tuple[list[dict], list[dict]]:
    """(kept rows, dropped rows) of one cell's run folder, each beside its seed example and raw reply."""
    seeds = {s["id"]: s for s in read_jsonl(run_dir / "seed_set.jsonl")}
    answers = {a["key"]: a for a in read_jsonl(run_dir / "generations.jsonl")}
    teacher = (record.config or {}).get("teacher") or {}
    backend = teacher.get("backend") or {}
    cell_id = record.cell_id
    cls = strategy_of((record.config or {}).get("strategy", {}).get("_target_"), record.strategy)
    columns = KEPT + [f for f in (cls.extra_fields if cls else ()) if f not in KEPT]
    kept, dropped = [], []
    for path in sorted((run_dir / "generated").glob("iteration_*.jsonl")):
        for row in read_jsonl(path):
            seed, answer = seeds.get(row.get("source_id"), {}), answers.get(row.get("cache_key"), {})
            kept.append({**dict.fromkeys(columns), **{k: v for k, v in row.items() if k in columns},
                         "source_prompt": seed.get("prompt"), "source_target": seed.get("target"),
                         "source_label": seed.get("label"), "teacher": teacher.get("name"),
                         "teacher_backend": backend.get("_target_", "").rsplit(".", 1)[-1] or None,
                         "teacher_model": hub_id_of((answer.get("identity") or {}).get("model")
                                                    or backend.get("model") or "") or None,
                         "sample_index": (answer.get("identity") or {}).get("sample_index"),
                         "teacher_reply": (answer.get("response") or {}).get("text"), "cell": name,
                         "cell_id": cell_id})
    for path in sorted((run_dir / "generated").glob("dropped_*.jsonl")):
        for row in read_jsonl(path):
            seed = seeds.get(row.get("source_id"), {})
            dropped.append({**dict.fromkeys(DROPPED), **{k: v for k, v in row.items() if k in DROPPED},
                            "source_prompt": seed.get("prompt"), "source_label": seed.get("label"),
                            "cell": name, "cell_id": cell_id})
    return kept, dropped


def cells_of(folder: Path) -> list[tuple[str, CellRecord, Path, list, list]]:
    """(name, record, run folder, kept, dropped) of each finished cell under `folder` with generated data;
    a skipped cell's data is in the run folder that computed it."""
    if not folder.is_dir():
        raise BenchError(f"{folder} is not a folder: point the export at a run folder (outputs/runs/...) or "
                         "a sweep folder (outputs/multiruns/...)")
    runs = run_folders(folder)
    if not runs:
        raise BenchError(f"{folder} holds no run: no record.json in it or its subfolders; point the export "
                         "at a run folder (outputs/runs/...) or a sweep folder (outputs/multiruns/...)")
    records = [(run_dir, CellRecord.from_dict(json.loads((run_dir / "record.json").read_text())))
               for run_dir in runs]
    records = [(run_dir, record) for run_dir, record in records if record.done]
    every = [set(record.overrides) for _, record in records]
    varying = set().union(*every) - set.intersection(*every) if every else set()
    found, names = [], set()
    for run_dir, record in records:
        source = computed_in(record, run_dir)
        name = cell_name(record, varying)
        if name in names:  # two cells the overrides do not tell apart
            name = f"{name}-{record.cell_id[:8]}"
        kept, dropped = cell_rows(record, source, name)
        if kept or dropped:
            names.add(name)
            found.append((name, record, source, kept, dropped))
    if not found:
        raise BenchError(f"no generated data in the {len(runs)} run(s) under {folder}: fine-tuning cells "
                         "generate none, and a skipped cell's data stays in the run folder that computed "
                         "it; export a sweep with a generating strategy (llm2llm, the budgeted ones)")
    return found


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


def task_source(task: str) -> tuple[str | None, str]:
    """(the Hub dataset the task's data is, its license) from runners/data_sources.yaml and the task."""
    entry = (yaml.safe_load(DATA_SOURCES.read_text()) or {}).get(task) or {}
    return entry.get("hub"), entry.get("license", "unknown")


def card(cells: list, folder: Path):
    """The dataset card (huggingface_hub's DatasetCard): the Hub's metadata, then how each cell's data
    was made."""
    from huggingface_hub import DatasetCard, DatasetCardData

    records = [record for _, record, _, _, _ in cells]
    tasks = sorted({r.config["task"]["name"] for r in records})
    kinds = sorted({TASK_CATEGORY.get(r.config["task"].get("kind", "classification"), "text-generation")
                    for r in records})
    sources = [task_source(t) for t in tasks]
    licenses = sorted({lic for _, lic in sources})
    rows = sum(len(kept) for _, _, _, kept, _ in cells)
    data = DatasetCardData(
        language=["en"], license=licenses[0] if len(licenses) == 1 else "other",
        task_categories=kinds, size_categories=[size_category(rows)],
        source_datasets=sorted({hub for hub, _ in sources if hub}),
        tags=["synthetic", "synthbench", *sorted({r.strategy for r in records})],
        pretty_name=f"synthbench: {', '.join(tasks)} generated data",
        # the dropped replies are a config of their own: a config's splits share one schema
        configs=[config for name, *_ in cells for config in (
            {"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*.parquet"}]},
            {"config_name": f"{name}-dropped",
             "data_files": [{"split": "dropped", "path": f"{name}/dropped-*.parquet"}]})],
    )
    parts = [
        f"# Generated data: {', '.join(tasks)}\n",
        (f"Made by synthbench ({version_text(code_version())}) from the runs in `{folder.name}`: "
         f"{len(cells)} cell(s), {rows:,} kept examples. Each cell is a config: its `train` split holds "
         "the examples a teacher wrote that the student trained on, each beside the seed example it came "
         "from (`source_*`) and the teacher's raw reply (`teacher_reply`); the config `<cell>-dropped` "
         "holds every reply that was not kept, with `reason` and `detail`.\n"),
        (f"```python\nfrom datasets import load_dataset\nload_dataset(\"<this repo or folder>\", "
         f"\"{cells[0][0]}\")\n```\n"),
        (f"**License.** The data derives from {', '.join(tasks)} ({', '.join(licenses)}); the teacher's "
         "own terms apply where its provider sets them (per cell below).\n"),
    ]
    for name, record, run_dir, kept, dropped in cells:
        parts.append(cell_section(name, record, run_dir, kept, dropped))
    # the text goes in as a value, not as template: Jinja would render the prompts' own {{ placeholders }}
    return DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ text }}",
                                     text="\n".join(parts))


def cell_section(name: str, record: CellRecord, run_dir: Path, kept: list, dropped: list) -> str:
    config, cost = record.config, record.cost or {}
    teacher, strategy = config["teacher"], dict(config.get("strategy") or {})
    backend = teacher.get("backend") or {}
    kind = config["task"].get("kind", "classification")  # the templates of this task's kind only
    prompts = {step: template.get(kind, template) if isinstance(template, dict) else template
               for step, template in (strategy.pop("prompts", {}) or {}).items()}
    reasons: dict = {}
    for row in dropped:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    ids = run_dir / "seed_ids.json"
    seeds = json.loads(ids.read_text()) if ids.is_file() else []
    backend_name = backend.get("_target_", "").rsplit(".", 1)[-1]
    terms = next((said for provider, said in TERMS.items() if provider in backend_name.lower()), None)
    spent = {role: line for role, line in cost.items() if role != "budget"}
    command = "python run.py " + " ".join(record.overrides)
    lines = [
        f"## `{name}`\n",
        f"- **strategy** `{record.strategy}`: {len(kept):,} kept, {len(dropped):,} dropped"
        + (f" ({', '.join(f'{n} {why}' for why, n in sorted(reasons.items()))})" if reasons else ""),
        f"- **teacher** `{teacher['name']}`: backend `{backend_name or 'none'}`, model "
        f"`{hub_id_of(str(backend.get('model') or '-'))}`, replies "
        + ("kept to each step's JSON schema (teacher.structured)" if teacher.get("structured")
           else "free text")
        + (f"; {terms}" if terms else ""),
        (f"- **task** `{config['task']['name']}`, student `{config['student']['name']}`, seed set "
         f"{len(seeds):,} examples (seed `{config['seed_set'].get('seed')}`, replicate "
         f"{config.get('replicate', 0)}; ids in `seed_ids` below)"),
        "- **cost** " + ("; ".join(f"{role}: {line.get('requests', 0)} queries, {tokens(line):,} tokens, "
                                    f"${line.get('cost_usd', 0):.4f}" for role, line in spent.items())
                         or "none"),
        f"- **budget** {json.dumps(config.get('budget'))}",
        f"- **filters** {json.dumps(strategy.get('filters'))}",
        f"- **rerun** `{command}` (suite {version_text(record.provenance or code_version())})",
        "",
        "<details><summary>strategy settings, prompt templates and reply formats</summary>\n",
        "```yaml\n" + yaml.safe_dump({"strategy": strategy, "prompts": prompts}, sort_keys=False, width=100)
        + "```\n</details>\n",
        f"<details><summary>seed_ids ({len(seeds)})</summary>\n\n{', '.join(seeds)}\n</details>\n",
    ]
    return "\n".join(lines)


def tokens(line: dict) -> int:
    return line.get("prompt_tokens", 0) + line.get("completion_tokens", 0)


def export(folder: Path, to: Path, overwrite: bool = False) -> dict:
    """Write DIR (the module's docstring); return {cell: (kept rows, dropped rows)}. Written beside DIR
    first and moved into place whole: a failure leaves nothing half-written."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()  # a bar per split of every cell says nothing; the summary lines do
    cells = cells_of(folder)
    if to.exists() and any(to.iterdir()) and not overwrite:
        raise BenchError(f"--to {to} is not empty: choose another folder, or pass --overwrite to replace it")
    writable_folder(to.parent, "--to", alternative="")
    partial = to.with_name(f".{to.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for name, _, _, kept, dropped in cells:
            splits = DatasetDict({"train": Dataset.from_list(kept) if kept else
                                  Dataset.from_dict({k: [] for k in KEPT}),
                                  "dropped": Dataset.from_list(dropped) if dropped else
                                  Dataset.from_dict({k: [] for k in DROPPED})})
            # one shard a split, also for an empty one: datasets writes none for 0 rows, and then
            # load_from_disk fails (IndexError) on the folder
            splits.save_to_disk(str(partial / name), num_shards=dict.fromkeys(splits, 1))
            for split, rows in splits.items():
                rows.to_parquet(str(partial / name / f"{split}-00000-of-00001.parquet"))
        card(cells, folder).save(partial / "README.md")
        if to.exists():
            shutil.rmtree(to)
        os.replace(partial, to)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {name: (len(kept), len(dropped)) for name, _, _, kept, dropped in cells}


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise BenchError("--push-to-hub needs a Hugging Face token in HF_TOKEN (a write token from "
                         "https://huggingface.co/settings/tokens)")
    return token


def push(folder: Path, repo: str, public: bool) -> str:
    """Upload the exported folder as a dataset repository (the parquet files and the card; the arrow
    copies stay local). The token comes from HF_TOKEN and never reaches a file or a log."""
    from huggingface_hub import HfApi

    api = HfApi(token=hub_token())
    try:
        api.create_repo(repo, repo_type="dataset", private=not public, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(folder),
                          allow_patterns=["README.md", "*/*.parquet"],
                          commit_message="synthbench export")
    except (OSError, ValueError) as error:  # the Hub's HTTP errors: one line, the export stays in place
        raise BenchError(f"pushing {folder} to {repo} failed: {first_line(error)} (check HF_TOKEN's write "
                         "access to the namespace; the export itself is in place)") from None
    return f"https://huggingface.co/datasets/{repo}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a run folder (outputs/runs/...) or a sweep folder")
    parser.add_argument("--to", type=Path, required=True, help="the dataset folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --to")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="then upload it to the Hub (HF_TOKEN)")
    parser.add_argument("--public", action="store_true", help="a public Hub repository (default private)")
    args = parser.parse_args(argv)
    try:
        if args.push_to_hub:
            hub_token()  # before anything is written
        made = export(args.folder, args.to, args.overwrite)
        for name, (kept, dropped) in made.items():
            print(f"{name}: {kept:,} kept, {dropped:,} dropped")
        print(f"dataset: {args.to} (load_dataset({str(args.to)!r}, <cell>); its card: {args.to}/README.md)")
        if args.push_to_hub:
            print(f"pushed: {push(args.to, args.push_to_hub, args.public)}")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
