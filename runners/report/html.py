"""report.html: the report as one self-contained page (no server, no network): the same sections as
report.md as sortable tables, the plots inline as SVG, and a data browser over what the teachers wrote —
each generated example beside the seed example it came from and the teacher's raw reply, each dropped
reply with why. Rendered with Jinja2 (report.html.j2 beside this file); the browser's rows travel in the
page as JSON and only the current page is drawn, so 100k rows stay quick."""

import json
import re
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from bench.records import CellRecord
from runners.export import cell_rows, computed_in

PAGE_SIZE = 50
TEMPLATE = "report.html.j2"


def paragraph(markdown: str) -> Markup:
    """A report paragraph's **bold** and `code` as HTML, everything else escaped."""
    text = str(escape(markdown))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


def shown(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def inline_svg(path: Path) -> Markup:
    """A plot's SVG without its XML prolog, to sit inside the page."""
    text = path.read_text()
    return Markup(text[text.index("<svg"):])


def browser_rows(records: list[dict], out: Path) -> list[dict]:
    """The browser's rows: from each finished cell's run folder (a skipped cell's: the one that computed
    it) where it still exists, else from an export of the same cells in <out>/dataset (runners.export)."""
    exported = exported_rows(out / "dataset")
    rows = []
    for record in map(CellRecord.from_dict, records):
        if not record.done:
            continue
        cell = " ".join(record.overrides) or "(defaults)"
        run_dir = computed_in(record)
        kept, dropped = cell_rows(record, run_dir) if (run_dir / "generated").is_dir() else \
            exported.get(record.cell_id, ([], []))
        rows += [{"cell": cell, "iteration": k.get("iteration"), "status": "kept", "text": k.get("prompt"),
                  "label": k.get("label"), "source": k.get("source_prompt"),
                  "source_label": k.get("source_label"), "reply": k.get("teacher_reply"), "why": "",
                  "reason": ""} for k in kept]
        rows += [{"cell": cell, "iteration": d.get("iteration"), "status": "dropped",
                  "text": d.get("question"), "label": "", "source": d.get("source_prompt"),
                  "source_label": d.get("source_label"), "reply": d.get("reply"),
                  "why": f"{d.get('reason')}: {d.get('detail') or ''}".rstrip(": "),
                  "reason": d.get("reason")}
                 for d in dropped]
    return rows


def exported_rows(folder: Path) -> dict:
    """{cell id: (kept rows, dropped rows)} of an export's parquet files, where there is one."""
    found: dict = {}
    for split, position in (("train", 0), ("dropped", 1)):
        for path in sorted(folder.glob(f"*/{split}-*.parquet")):
            for row in pd.read_parquet(path).to_dict("records"):
                found.setdefault(row.get("cell_id"), ([], []))[position].append(row)
    return found


def write_html(out: Path, title: str, intro: list[str], sections: list[tuple[str, str, pd.DataFrame]],
               plots: list[tuple[str, Path]], browser: list[dict]) -> Path:
    environment = Environment(loader=FileSystemLoader(Path(__file__).parent),
                              autoescape=select_autoescape(["html", "j2"]))
    page = environment.get_template(TEMPLATE).render(
        title=title,
        intro=[paragraph(p) for p in intro],
        sections=[{"name": name, "title": heading, "columns": [str(c) for c in table.columns],
                   "rows": [[shown(v) for v in row] for row in table.itertuples(index=False)]}
                  for name, heading, table in sections],
        plots=[(name, inline_svg(path.with_suffix(".svg"))) for name, path in plots
               if path.with_suffix(".svg").is_file()],
        browser_json=Markup(json.dumps(browser, default=str).replace("</", "<\\/")),  # never ends the script
        browser_count=f"{len(browser):,}",
        browser_cells=sorted({r["cell"] for r in browser}),
        browser_iterations=sorted({r["iteration"] for r in browser if r["iteration"] is not None}),
        browser_reasons=sorted({r["reason"] for r in browser if r["reason"]}),
        page_size=PAGE_SIZE,
    )
    path = out / "report.html"
    path.write_text(page)
    return path
