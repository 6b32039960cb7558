"""The layering a newcomer relies on, checked by walking every import in bench/ and runners/ (module
level and inside functions; imports under `if TYPE_CHECKING:` are for type checkers only): bench/
never imports runners/, and no two folders (or top-level modules) import each other, directly or
round a longer loop."""

import ast
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ("bench", "runners")


def node_of(module: str) -> str | None:
    """The folder (bench/teachers) or top-level module (bench/job.py) an import lands in."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if len(parts) > 1 and (REPO / parts[0] / parts[1]).is_dir():
        return f"{parts[0]}/{parts[1]}"
    if len(parts) > 1 and (REPO / parts[0] / f"{parts[1]}.py").is_file():
        return f"{parts[0]}/{parts[1]}.py"
    return parts[0]  # the package itself (its __init__)


def is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imports(tree: ast.AST) -> list[str]:
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)  # `from bench import job`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            relative = path.relative_to(REPO)
            source = node_of(".".join(relative.with_suffix("").parts).removesuffix(".__init__"))
            targets = {node_of(name) for name in imports(ast.parse(path.read_text()))}
            # `from bench.x import y` also names bench/x/y, which may not exist: keep real targets only
            graph.setdefault(source, set()).update(t for t in targets if t and t != source and
                                                   (REPO / t).exists())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every loop, as the path that closes it (depth-first search over the nodes)."""
    found, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def test_bench_never_imports_runners():
    graph = import_graph()
    wrong = {source: sorted(t for t in targets if t.startswith("runners"))
             for source, targets in graph.items() if source.startswith("bench")}
    assert not {k: v for k, v in wrong.items() if v}


def test_no_folder_imports_another_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_the_walk_sees_imports_inside_functions_and_finds_a_planted_loop():
    graph = import_graph()
    assert "bench/embeddings.py" in graph["bench/teachers"]  # the simulator's import inside a method
    planted = {**graph, "bench/embeddings.py": graph.get("bench/embeddings.py", set()) | {"bench/teachers"}}
    assert ["bench/embeddings.py", "bench/teachers", "bench/embeddings.py"] in cycles(planted) or \
        ["bench/teachers", "bench/embeddings.py", "bench/teachers"] in cycles(planted)


@pytest.mark.parametrize("command", [["run.py"], ["-m", "runners.report"], ["-m", "runners.advise"],
                                     ["-m", "runners.probe_teacher"], ["-m", "runners.benchmarks.throughput"],
                                     ["-m", "runners.benchmarks.teacher_throughput"], ["-m", "runners.plan"],
                                     ["-m", "runners.benchmarks.gpu_check"],
                                     ["-m", "runners.benchmarks.calibration"]])
def test_every_command_answers_help_with_its_usage(command):
    result = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert "usage" in result.stdout.lower() or "powered by Hydra" in result.stdout


def test_the_code_keeps_to_the_lint_rules():
    """pyproject.toml's ruff rules, 110 columns among them."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


def test_every_third_party_import_is_a_declared_dependency():
    """A fresh install must bring every package the code and its tests import (another package's
    dependency may go)."""
    import tomllib
    from importlib.metadata import packages_distributions

    imported = set()
    for path in [*REPO.glob("bench/**/*.py"), *REPO.glob("runners/**/*.py"), *REPO.glob("tests/**/*.py"),
                 REPO / "run.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values()
                                                for r in extra)]
    def normalized(name: str) -> str:
        # without separators, so that an extra's module that is not installed here (CI installs `dev`
        # only) still meets its distribution: lmformatenforcer is lm-format-enforcer
        return re.sub(r"[-_.]", "", name.lower())

    declared = {normalized(re.split(r"[<>=\[ ;]", r, maxsplit=1)[0]) for r in requirements}
    distributions = packages_distributions()
    own = {"bench", "runners", "synthbench_conf", "tests"}
    third_party = imported - set(sys.stdlib_module_names) - own
    names = {module: {normalized(d) for d in distributions.get(module, [module])} for module in third_party}
    missing = sorted(module for module, dists in names.items() if not dists & declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_run_py_help_is_the_applications_own():
    result = subprocess.run([sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("synthbench: which way of generating synthetic training data")
    for line in ("experiment: budget_strategies, controls, diversity, diversity_pretrain",
                 "task: casehold, gsm8k", "python run.py -m experiment=smoke",
                 "python -m runners.plan experiment=llm2llm"):
        assert line in result.stdout


def test_every_class_and_function_reads_in_one_sitting():
    """No class over 200 lines, no function over 60 (bench/, runners/, run.py)."""
    long = []
    for path in [*sorted((REPO / "bench").rglob("*.py")), *sorted((REPO / "runners").rglob("*.py")),
                 REPO / "run.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                limit = 200 if isinstance(node, ast.ClassDef) else 60
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def string_constants(path) -> list[str]:
    """The string literals of a module's code, its docstrings left out (prose may name a paper)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_report_selects_cells_by_declared_roles_never_by_a_strategy_or_teacher_name():
    """No strategy's name or family, no teacher preset's name, as a literal in runners/report/ or
    runners/advise.py: a new strategy or teacher gets the same treatment as the papers' own."""
    from bench.strategies import registered

    names = {*registered(), *(cls.family for cls in registered().values()),
             *(p.stem for p in (REPO / "conf" / "strategy").glob("*.yaml")),
             *(p.stem for p in (REPO / "conf" / "teacher").glob("*.yaml"))}
    found = [(str(path.relative_to(REPO)), text)
             for path in [*sorted((REPO / "runners" / "report").glob("*.py")), REPO / "runners" / "advise.py"]
             for text in string_constants(path)
             if text in names or any(re.search(rf"\b{re.escape(n)}\b", text) for n in names if "_" in n)]
    assert not found, found
