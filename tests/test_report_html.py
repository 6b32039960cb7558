"""report.html in a real browser: headless Chromium (Debian's `chromium`) renders the page of a real tiny
sweep, runs its script, and the DOM it ends with is checked; a screenshot is kept in the test's folder."""

import re
import shutil
import subprocess

import pytest

from bench.store import find_records
from runners import report
from tests.conftest import missing, new_question_sweep

pytestmark = pytest.mark.slow


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        missing("headless Chromium is not installed (apt-get install chromium)")
    return found


def rendered(page, view: str = "") -> str:
    """The DOM after the page's scripts ran, opened at `view` (the browser's #browser?... link)."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{page}{view}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-1000:]
    return result.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of fine-tuning vs New Question at BR 1 and 2: over 50 browser rows, so it pages."""
    where = tmp_path_factory.mktemp("report")
    return report.build(find_records(new_question_sweep(where, "1,2")), where / "out")["html"]


def rows_of(dom: str) -> list[str]:
    body = dom[dom.index('id="b-rows"'):]
    return re.findall(r'<tr class="(kept|dropped)">', body[:body.index("</tbody>")])


def test_the_report_page_shows_its_tables_plots_and_a_paging_data_browser(page, tmp_path):
    html = page.read_text()
    assert not re.search(r'(src|href)="https?:', html) and "<link" not in html  # self-contained
    dom = rendered(page)
    for section in ("budget_strategies", "papers", "cells", "browser"):
        assert f'<section id="{section}">' in dom
    assert '<figure id="plot-accuracy_vs_budget_ratio"><svg' in dom  # the plot inline, as SVG
    total = int(re.search(r"page 1 of (\d+) \((\d+) rows\)", dom).group(2))
    assert total > 50 and len(rows_of(dom)) == 50  # one page drawn, not every row
    second = rendered(page, "#browser?page=2")
    assert len(rows_of(second)) == min(50, total - 50) and f"page 2 of {(total + 49) // 50}" in second

    dropped_view = rendered(page, "#browser?status=dropped")
    shown = rows_of(dropped_view)
    assert shown and set(shown) == {"dropped"}
    assert re.search(r'<td class="why">near_duplicate: ROUGE-L &gt; 0.5 with: [^<]+</td>', dropped_view)
    kept_view = rendered(page, "#browser?status=kept")
    # a kept example beside the seed example it came from and the teacher's raw reply
    row = re.search(r'<tr class="kept"><td class="cell">[^<]*</td><td class="iteration">1</td>'
                    r'<td class="status">kept</td><td class="text">([^<]+)</td><td class="label">([^<]+)</td>'
                    r'<td class="source">([^<]+)</td><td class="source_label">[^<]+</td>'
                    r'<td class="reply">([^<]+)</td>', kept_view)
    assert row and row.group(1).endswith("Class:") and row.group(3).endswith("Class:")
    assert "Label:" in row.group(4)

    shot = tmp_path / "report.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                    f"--screenshot={shot}", f"file://{page}"], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
