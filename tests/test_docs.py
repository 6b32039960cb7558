"""The docs cannot drift from the code: their how-to examples run verbatim, the configuration table and the
layout name every option and module there is, and the counts they quote are counted."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd

from bench.store import find_records
from runners.export import export
from tests.conftest import QUICK, REPO, run_cli

DOCS = REPO / "docs"


def examples(page: str) -> dict[str, str]:
    """{path: text} of the page's fenced code blocks whose first line is `# <path>`: the files a reader
    would save."""
    found = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", (DOCS / page).read_text(), re.DOTALL):
        first, _, rest = block.partition("\n")
        if first.startswith("# ") and "/" in first:
            found[first[2:].strip()] = rest
    return found


def save(files: dict[str, str], where: Path) -> None:
    for path, text in files.items():
        (where / path).parent.mkdir(parents=True, exist_ok=True)
        (where / path).write_text(text)


def test_a_strategy_of_its_own_family_written_from_the_docs_gets_verdicts_and_its_fields_exported(tmp_path,
                                                                                              monkeypatch):
    """docs/strategies.md's example, saved as a reader would: one class and one YAML outside the checkout.
    Its cells are judged against fine-tuning with a verdict, and its declared field is in the export."""
    files = examples("strategies.md")
    assert set(files) == {"mystrategies/relabel.py", "myconf/strategy/relabel.yaml"}
    save(files, tmp_path)
    common = [*QUICK, f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"]
    env = {"PYTHONPATH": str(tmp_path), "BENCH_CACHE_DIR": str(tmp_path / "stores")}
    result = run_cli("-m", *common, "strategy=finetune,relabel", "replicate=0,1",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = {(r["strategy"], r["config"]["replicate"]): r for r in find_records(tmp_path / "sweep")}
    assert records["relabel", 1]["config"]["strategy"]["relabel_samples"] == 2  # the YAML's, saved in full
    assert records["relabel", 1]["config"]["train"]["seed"] == 1  # the seed replicate 1 trained with
    comparisons = pd.read_csv(tmp_path / "sweep" / "report" / "comparisons.csv")
    row = comparisons[(comparisons.A == "relabel") & (comparisons.B == "finetune")]
    assert len(row) == 1 and row.n.iloc[0] == 2
    assert row.verdict.iloc[0] in ("helps", "hurts") or row.verdict.iloc[0].startswith("can't tell")
    exported = tmp_path / "dataset"
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH=. gives the export its class
    export(tmp_path / "sweep", exported)
    kept = pd.read_parquet(next(exported.glob("relabel*/train-*.parquet")))
    assert "written_label" in kept and (kept.written_label == kept.label).all() and len(kept)
    # a misspelt setting: one line naming it and the class's settings, before any work
    wrong = run_cli(*common, "strategy=relabel", "+strategy.relabel_sample=3", cwd=tmp_path, **env)
    assert wrong.returncode == 2
    assert "strategy.relabel_sample is not a setting of relabel" in wrong.stderr
    assert "relabel_samples" in wrong.stderr and "Traceback" not in wrong.stderr


class ToyServer(BaseHTTPRequestHandler):
    """The toy API of docs/teachers.md: POST /generate {prompt, ...} -> {output, tokens_in, tokens_out}.
    Asked for a new example (the prompt ends 'Text: ... Label: L') it writes the text's words reversed
    with label L; anything else (the probe): OK."""

    served: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["prompt"]
        ToyServer.served.append(body)
        new = re.search(r"Text: (.+)\nLabel: (.+)\Z", prompt)
        output = f"1. Text: {' '.join(reversed(new.group(1).split()))}\nLabel: {new.group(2)}" if new \
            else "OK"
        payload = json.dumps({"output": output, "tokens_in": len(prompt.split()), "tokens_out": 9}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_a_teacher_backend_written_from_the_docs_runs_a_cell_against_its_server(tmp_path):
    """docs/teachers.md's backend and YAML, saved as a reader would, against a server of their own request
    shape on 127.0.0.1: an LLM2LLM cell runs, and it paid exactly what the server answered."""
    files = examples("teachers.md")
    assert set(files) == {"myteachers/toy.py", "myconf/teacher/toy.yaml"}
    save(files, tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), ToyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ToyServer.served.clear()
    try:
        result = run_cli(*QUICK, f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "teacher=toy",
                         f"teacher.backend.base_url=http://127.0.0.1:{server.server_port}",
                         "strategy=llm2llm_quick", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                         PYTHONPATH=str(tmp_path), BENCH_CACHE_DIR=str(tmp_path / "stores"))
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    paid = record["cost"]["teacher"]["requests"] + record["cost"].get("probe", {}).get("requests", 0)
    assert paid == len(ToyServer.served) > 1
    assert record["cost"]["teacher"]["failed"] == 0
    assert sum(i["generation"].get("added", 0) for i in record["iterations"]) > 0


def table_row(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))


def test_the_configuration_table_lists_every_option_of_every_group():
    """docs/configuration.md's table against conf/: a new YAML missing from it fails here."""
    text = (DOCS / "configuration.md").read_text()
    conf = REPO / "conf"
    groups = [p for p in conf.iterdir() if p.is_dir() and p.name not in ("prompts", "local", "hydra")]
    groups.append(conf / "hydra" / "launcher")
    for group in groups:
        name = str(group.relative_to(conf))
        row = table_row(text, name)
        missing = [p.stem for p in sorted(group.glob("*.yaml")) if f"`{p.stem}`" not in row]
        assert not missing, f"docs/configuration.md's `{name}` row lacks {missing}"


def test_the_layout_names_every_module():
    text = (DOCS / "layout.md").read_text()
    modules = [p for folder in ("bench", "runners") for p in sorted((REPO / folder).rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py")]
    missing = [str(p.relative_to(REPO)) for p in modules if p.name not in text]
    assert not missing, f"docs/layout.md does not name {missing}"


def test_the_counts_the_docs_quote_are_counted():
    from tests.test_bad_inputs import CASES

    text = (DOCS / "configuration.md").read_text()
    said = re.search(r"`tests/test_bad_inputs.py` runs (\d+) such cases", text)
    assert said and int(said.group(1)) == len(CASES)
