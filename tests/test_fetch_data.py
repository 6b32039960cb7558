"""`python -m runners.fetch_data`: the real sources file's checksums, downloads through file:// URLs to
local copies of the release files, verification, and a layout the tasks load from."""

import subprocess
import sys

import yaml

from bench.tasks import load_task
from runners import fetch_data
from tests.conftest import REPO, typed_config


def local_sources(data_dir, tmp_path, **replace) -> str:
    """The real sources file with each URL pointing at this machine's copy of the file (file://)."""
    sources = yaml.safe_load(fetch_data.SOURCES.read_text())
    for entry in sources.values():
        for relative, source in entry.get("files", {}).items():
            source["url"] = replace.get(relative, (data_dir / relative).as_uri())
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(sources))
    return str(path)


def test_every_release_file_matches_its_recorded_checksum(data_dir):
    sources = yaml.safe_load(fetch_data.SOURCES.read_text())
    files = {relative: source for entry in sources.values()
             for relative, source in entry.get("files", {}).items()}
    assert len(files) == 10
    assert all(s["url"].startswith("https://raw.githubusercontent.com/") for s in files.values())
    for relative, source in files.items():
        assert fetch_data.sha256_of(data_dir / relative) == source["sha256"], relative


def test_fetched_files_are_verified_and_laid_out_as_the_tasks_load_them(data_dir, tmp_path):
    to = tmp_path / "data"
    command = [sys.executable, "-m", "runners.fetch_data", "trec", "snips", "casehold", "--to", str(to),
               "--sources", local_sources(data_dir, tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "trec: trec/train_5500.label fetched" in result.stdout and "casehold: skipped" in result.stdout
    assert f"export BENCH_DATA_DIR={to}" in result.stdout
    for task, train, test in (("trec", 5452, 500), ("snips", 13084, 700)):
        data = load_task(typed_config(f"task={task}").task, str(to))
        assert (len(data.train) + data.dropped_test_overlap, len(data.test)) == (train, test)
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and again.stdout.count(" kept") == 6 and " fetched" not in again.stdout


def test_a_file_that_does_not_match_is_refused_and_the_others_are_kept(data_dir, tmp_path):
    to = tmp_path / "data"
    swapped = {"trec/TREC_10.label": (data_dir / "trec/train_5500.label").as_uri()}
    wrong = local_sources(data_dir, tmp_path, **swapped)
    assert fetch_data.main(["trec", "--to", str(to), "--sources", wrong]) == 1
    assert (to / "trec/train_5500.label").is_file()  # fetched before the failure: kept
    assert not (to / "trec/TREC_10.label").exists() and not list(to.rglob("*.part"))  # no partial file
    assert fetch_data.main(["nosuchtask", "--to", str(to)]) == 2
