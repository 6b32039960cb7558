"""The README a newcomer reads: short, its two commands the ones CI runs, every page it links there."""

import re
import subprocess
import sys

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def quick_start_commands() -> list[str]:
    """The Quick start block's commands, read as .ci/run reads them."""
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_is_read_in_five_minutes():
    assert len(README.splitlines()) <= 250


def test_the_quick_start_is_two_commands_and_ci_runs_them_as_written():
    install_and_job, install_and_test = quick_start_commands()
    assert "runners.fetch_models" in install_and_job and "run.py" in install_and_job
    assert install_and_test.endswith("python -m pytest -n 2")
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci  # a fresh venv
    assert "pytest" not in ci.replace("pytest -n 2 -m slow", "")  # no test command but the slow step's
    reader = ci.split("<<'PY'\n")[1].split("\nPY\n")[0]  # the lines .ci/run runs, read from README.md
    listed = subprocess.run([sys.executable, "-c", reader], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    assert listed.splitlines() == quick_start_commands()


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+://", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)\)", README))
    assert linked == {p.name for p in (REPO / "docs").glob("*.md")}  # every docs page is reachable
