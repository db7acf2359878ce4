"""A stage's executed notebook as its readers get it: the verdict card first, then text, figures and tables;
the run's parameters as a table and its log folded away at the end. The .py notebooks stay as they are."""
import copy
import html
import re

import nbformat

from lib.core.params import parse_cell

LOCAL_PATHS = ("out_dir", "data_dir")  # where this run kept its files: the reader's machine has other paths


def _blank(output) -> bool:
    """A display with nothing to see: NNCF's progress bars (drawn by rich) end as empty <pre> blocks, each a gap."""
    data = output.get("data", {})
    if output.get("output_type") not in ("display_data", "execute_result") or set(data) - {"text/html", "text/plain"}:
        return False
    markup = data.get("text/html", "")
    visible = re.sub(r"<[^>]*>", "", markup).strip() or re.search(r"<(img|svg|table|iframe|canvas|video)\b", markup, re.I)
    return not visible and not str(data.get("text/plain", "")).strip()


def _heading(cell) -> str | None:
    return next((line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")), None)


def _html_cell(markup: str):
    return nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", data={"text/html": markup})])


def _without_verdict_section(cells: list) -> list:
    """The notebook's closing '## Verdict' section, which the card shows first."""
    out, skipping = [], False
    for cell in cells:
        if cell.cell_type == "markdown":
            skipping = _heading(cell) == "Verdict"
        if not skipping:
            out.append(cell)
    return out


def _level(cell) -> int | None:
    """The level of a markdown cell's first line if it is a heading (2 for '## ...'), else None."""
    first = next((line for line in cell.source.splitlines() if line.strip()), "") if cell.cell_type == "markdown" else ""
    return len(first) - len(first.lstrip("#")) if first.startswith("#") else None


def _without_empty_sections(cells: list) -> list:
    """Headings with nothing under them (their cells only printed progress, now in the folded log): a reader would
    meet a title and no content. A heading is empty when the next cell is a heading of its level or higher."""
    out = []
    for cell in reversed(cells):
        bare = _level(cell) is not None and len([x for x in cell.source.splitlines() if x.strip()]) == 1
        following = _level(out[-1]) if out else 0
        if bare and following is not None and following <= _level(cell):
            continue
        out.append(cell)
    return out[::-1]


def _split_title(cells: list) -> list:
    """The first markdown cell as its title line alone, then the rest of its text: the card goes in between."""
    first = cells[0]
    lines = first.source.splitlines()
    if first.cell_type != "markdown" or not lines or not lines[0].startswith("# "):
        return cells
    rest = "\n".join(lines[1:]).strip()
    return [nbformat.v4.new_markdown_cell(lines[0])] + ([nbformat.v4.new_markdown_cell(rest)] if rest else []) + cells[1:]


def parameters_table(nb) -> str:
    """The run's parameters: name, value as run, what it means (the parameters cell's comment)."""
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    helps = {name: p.help for name, p in parse_cell(cell.source.splitlines() if cell else []).items()}
    values = nb.metadata.get("papermill", {}).get("parameters") or {}
    rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td class='num'>"
                   f"{'(local path)' if k in LOCAL_PATHS else html.escape(repr(v))}</td>"
                   f"<td>{html.escape(helps.get(k, ''))}</td></tr>" for k, v in values.items())
    if not rows:
        return ""
    return ("<h2 id='parameters'>Parameters of this run</h2><div class='scroll-box' style='overflow-x:auto'>"
            "<table class='params'><caption>As passed by run_all.py (defaults and meanings: the notebook's parameters "
            "cell)</caption><tr><th>parameter</th><th>value</th><th>meaning</th></tr>" + rows + "</table></div>")


def _log(nb) -> str:
    """Every stdout line of the run, in order, folded: progress for whoever wants it, out of the reader's way.
    The run's local folders read as their parameter's name."""
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    values = nb.metadata.get("papermill", {}).get("parameters") or {}
    for name in LOCAL_PATHS:
        if isinstance(values.get(name), str) and len(values[name]) > 1:
            text = text.replace(values[name], f"<{name}>")
    if not text.strip():
        return ""
    return (f"<details class='log'><summary>Log of this run ({text.count(chr(10))} lines)</summary>"
            f"<pre>{html.escape(text)}</pre></details>")


def for_readers(nb, card: str = ""):
    """The executed notebook without stderr streams, blank displays, empty code cells or empty sections, its stdout
    moved to a folded log at the end, the card after the title, the parameters as a table last. Each figure's alt
    text is its section's heading."""
    nb, heading = copy.deepcopy(nb), "Figure"
    log, kept = _log(nb), []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = _heading(cell) or heading
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "stream" and not _blank(o)]
            for o in cell.outputs:
                if "image/png" in o.get("data", {}):
                    o.setdefault("metadata", {}).setdefault("image/png", {}).setdefault("alt", f"Figure: {heading}")
            if not cell.outputs:
                continue
        kept.append(cell)
    cells = _without_empty_sections(_without_verdict_section(kept) if card else kept)
    cells = _split_title(cells) if card else cells
    if card:
        cells.insert(1, _html_cell(card))
    tail = parameters_table(nb) + log
    nb.cells = cells + ([_html_cell(tail)] if tail else [])
    return nb
