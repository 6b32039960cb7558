"""Download the tasks' original release files, verify each against its sha256 and lay them out as
BENCH_DATA_DIR expects: `python -m runners.fetch_data [task ...] --to DIR` (all tasks by default).
Where each file comes from is runners/data_sources.yaml. A file already there with the right checksum
is kept; a download is written beside its destination and renamed only once verified, so a failure
leaves no partial file and loses none fetched before it."""

import argparse
import hashlib
import sys
import urllib.request
from pathlib import Path

import yaml

from bench.errors import first_line

SOURCES = Path(__file__).with_name("data_sources.yaml")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(url: str, sha256: str, destination: Path) -> str:
    """'kept' or 'fetched'; an OSError / ValueError saying what failed."""
    if destination.is_file() and sha256_of(destination) == sha256:
        return "kept"
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        got = sha256_of(partial)
        if got != sha256:
            raise ValueError(f"sha256 {got[:16]}… is not the release's {sha256[:16]}…: the file at the "
                             "URL changed; check it against runners/data_sources.yaml")
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return "fetched"


def checked_sources(sources) -> dict:
    """The sources file's tasks, each `hub_only: why` or `files: {path: {url, sha256}}`."""
    if not isinstance(sources, dict):
        raise ValueError("not a mapping of tasks")  # noqa: TRY004 (one kind of error for main to report)
    for task, entry in sources.items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and ("hub_only" in entry or (
                isinstance(files, dict) and all(isinstance(f, dict) and {"url", "sha256"} <= set(f)
                                                for f in files.values())))):
            raise ValueError(f"task {task} has neither hub_only nor files with url and sha256")
    return sources


def fetch(tasks: list[str], to: Path, sources: dict) -> list[str]:
    """Fetch each task's files into `to`; return the problems (one line each; empty: all fetched)."""
    problems = []
    for task in tasks:
        entry = sources[task]
        if "hub_only" in entry:
            print(f"{task}: skipped: {entry['hub_only']}")
            continue
        for relative, source in entry["files"].items():
            try:
                outcome = fetch_file(source["url"], source["sha256"], to / relative)
                print(f"{task}: {relative} {outcome}")
            except (OSError, ValueError) as error:
                problems.append(f"{task}: {relative} from {source['url']}: {error}")
                print(f"{task}: {relative} FAILED ({error})", file=sys.stderr)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.fetch_data",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help="tasks to fetch (default: all)")
    parser.add_argument("--to", type=Path, required=True, help="the data folder (then BENCH_DATA_DIR=it)")
    parser.add_argument("--sources", type=Path, default=SOURCES,
                        help="URLs and sha256s (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        sources = checked_sources(yaml.safe_load(args.sources.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as error:
        said = first_line(error)
        print(f"error: --sources {args.sources}: {said}; it maps each task to hub_only or files: {{path: "
              "{url, sha256}} (runners/data_sources.yaml shows the shape)", file=sys.stderr)
        return 2
    unknown = [t for t in args.tasks if t not in sources]
    if unknown:
        print(f"error: no task {', '.join(unknown)} in {args.sources}: use {', '.join(sources)}",
              file=sys.stderr)
        return 2
    problems = fetch(args.tasks or list(sources), args.to, sources)
    if problems:
        print(f"error: {len(problems)} files not fetched (the others are in place; run again to retry):",
              file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"done: export BENCH_DATA_DIR={args.to.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
