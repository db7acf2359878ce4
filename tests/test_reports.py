"""Reports for readers: what the smoke run's HTML must not contain, and what the index must show.

Each check is a function that returns the defects it finds, so the last test can show it finds a defect
reintroduced on purpose (a check that cannot fail proves nothing)."""
import json
import re

import nbformat
import pytest
from bs4 import BeautifulSoup

from lib.core import pipeline
from lib.report import render
from lib.report.plots import SCROLL_BOX

COLUMN_BUDGET = 8  # a table this narrow fits 1400 px without a scroll box of its own
SCROLLERS = {SCROLL_BOX, "scroll"}  # report tables (lib.report.plots.table) and the index's benchmark table


def stderr_outputs(page: str) -> list[str]:
    soup = BeautifulSoup(page, "html.parser")
    return [d.get_text()[:80] for d in soup.select('[data-mime-type="application/vnd.jupyter.stderr"]')]


def stray_values(page: str) -> list[str]:
    """Out[n] prompts (a cell's last expression shown as a value, e.g. PosixPath(...)) and Path reprs in the text."""
    soup = BeautifulSoup(page, "html.parser")
    for tag in soup(["style", "script"]):  # the template's CSS is not what a reader sees
        tag.decompose()
    prompts = [p.get_text(" ", strip=True) for p in soup.select(".jp-OutputPrompt") if p.get_text(strip=True)]
    # the pages hide Out[n] prompts: a bare value is an execute_result that is plain text
    values = [v.get_text(" ", strip=True)[:80] for v in soup.select('.jp-OutputArea-executeResult [data-mime-type="text/plain"]')]
    return prompts + values + re.findall(r"(?:Posix|Windows)Path\([^)]*\)", soup.get_text(" "))


def unboxed_wide_tables(page: str) -> list[str]:
    """Tables wider than the column budget that do not sit in a box that scrolls sideways on its own."""
    soup = BeautifulSoup(page, "html.parser")
    bad = []
    for table in soup.find_all("table"):
        first = table.find("tr")
        columns = sum(int(c.get("colspan", 1)) for c in first.find_all(["th", "td"])) if first else 0
        boxed = any(SCROLLERS & set(p.get("class") or []) and
                    (SCROLL_BOX not in (p.get("class") or []) or "overflow-x:auto" in p.get("style", ""))
                    for p in table.parents if p.name == "div")
        if columns > COLUMN_BUDGET and not boxed:
            bad.append(f"{columns} columns: {first.get_text(' ', strip=True)[:60]}")
    return bad


def missing_badges(index: str, results: dict) -> list[str]:
    """Every goal check of every stage JSON must appear on the index as a MET / NOT MET badge."""
    soup = BeautifulSoup(index, "html.parser")
    missing = []
    for stage, result in results.items():
        for c in result.get("goals", []):
            li = soup.find("li", attrs={"data-stage": stage, "data-goal": c["goal"], "data-subject": c["subject"]})
            badge = li.find("span", class_="badge").get_text() if li else None
            if badge != ("MET" if c["met"] else "NOT MET"):
                missing.append(f"{stage}: {c['subject']} {c['goal']} ({badge})")
    return missing


def test_stage_reports_are_clean(smoke_run):
    for stage in pipeline.NAMES:
        page = (smoke_run / "reports" / f"{stage}.html").read_text()
        assert not stderr_outputs(page), (stage, stderr_outputs(page)[:3])
        assert not stray_values(page), (stage, stray_values(page))
        assert not unboxed_wide_tables(page), (stage, unboxed_wide_tables(page))
        goals = json.loads((smoke_run / "reports" / f"{stage}.json").read_text())["goals"]
        # every stage ends with its verdict, and with its goals MET or NOT MET where it has any (06 chooses nothing)
        assert 'id="verdict"' in page and ("MET" in page or not goals) and (goals or stage == "06_stacking"), stage
        assert "epoch 1:" in page or stage not in ("01_data_teacher", "02_distillation")  # summary lines stay
        soup = BeautifulSoup(page, "html.parser")
        assert soup.title.get_text() == f"FinCompress: {stage}" and soup.find("a", href="index.html"), stage
        alts = [img.get("alt", "") for img in soup.find_all("img")]  # each figure named by its section's heading
        assert all(a.startswith("Figure: ") and len(a) > 10 for a in alts), (stage, alts)


def test_index_is_a_dashboard(smoke_run):
    reports = smoke_run / "reports"
    index = (reports / "index.html").read_text()
    assert '<meta name="viewport" content="width=device-width' in index  # phones render at device width, not 36%
    results = {s: json.loads((reports / f"{s}.json").read_text()) for s in pipeline.NAMES}
    assert sum(len(r.get("goals", [])) for r in results.values()) >= 10
    assert not missing_badges(index, results), missing_badges(index, results)
    assert not unboxed_wide_tables(index) and not render.REMOTE_SCRIPT.search(index)
    soup = BeautifulSoup(index, "html.parser")
    facts = soup.find(class_="facts").get_text()
    assert all(k in facts for k in ("commit", "finished", "hardware", "total run time"))
    assert "seed 42 · training seeds 42, 43" in facts  # the smoke run trains with 2 seeds
    for img in soup.find_all("img"):  # a thumbnail opens its full image; its caption opens the stage's page
        assert (reports / img["src"]).is_file() and img.find_parent("a")["href"] == img["src"]
        assert img.find_parent("figure").figcaption.a["href"].endswith(".html")
    assert len(soup.find_all("img")) == 2
    assert not re.search(r"\d\.\d{4,}", soup.find("table", class_="bench").get_text(" "))


def test_the_checks_find_reintroduced_defects(smoke_run, tmp_path):
    """Put back what issue 15 found (a stderr progress bar, a stray PosixPath value, a raw 12-column table,
    a goal without its badge) and each check reports it."""
    nb = nbformat.read(smoke_run / "reports" / "executed" / "01_data_teacher.ipynb", as_version=4)
    cell = nb.cells[-1]
    cell.outputs += [nbformat.v4.new_output("stream", name="stderr", text="teacher epoch 1/1: 100%|#####| 11/11\n"),
                     nbformat.v4.new_output("execute_result", data={"text/plain": "PosixPath('/tmp/x')"}, execution_count=9),
                     nbformat.v4.new_output("display_data", data={"text/html": "<table><tr>" + "<th>c</th>" * 12 + "</tr></table>"})]
    from nbconvert import HTMLExporter
    raw, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    assert stderr_outputs(raw) and stray_values(raw) and unboxed_wide_tables(raw)
    render.render_html(nb, tmp_path / "r.html")  # the renderer drops stderr; the other two are the cell's to fix
    page = (tmp_path / "r.html").read_text()
    assert not stderr_outputs(page) and stray_values(page) and unboxed_wide_tables(page)
    assert "No description has been provided" in raw and "No description has been provided" not in page
    results = {"01_data_teacher": json.loads((smoke_run / "reports" / "01_data_teacher.json").read_text())}
    results["01_data_teacher"]["goals"].append({"goal": "target_f1", "subject": "ghost", "met": True})
    assert missing_badges((smoke_run / "reports" / "index.html").read_text(), results) == ["01_data_teacher: ghost target_f1 (None)"]


@pytest.mark.parametrize("columns,boxed,flagged", [(6, False, False), (12, False, True), (12, True, False)])
def test_column_budget(columns, boxed, flagged):
    table = "<table><tr>" + "<th>x</th>" * columns + "</tr></table>"
    page = f'<div class="{SCROLL_BOX}" style="overflow-x:auto;max-width:100%">{table}</div>' if boxed else table
    assert bool(unboxed_wide_tables(page)) == flagged


def test_every_json_the_run_writes_is_strict(smoke_run):
    """Browsers and jq reject NaN and Infinity: every JSON of a run parses with a strict parser."""
    def reject(constant):
        raise ValueError(constant)
    files = [f for f in smoke_run.rglob("*.json") if "executed" not in f.parts]
    assert any(f.name == "05_benchmark.json" for f in files) and any(f.name == "benchmark.json" for f in files)
    for f in files:
        try:
            json.loads(f.read_text(encoding="utf-8"), parse_constant=reject)
        except ValueError as e:
            pytest.fail(f"{f.relative_to(smoke_run)}: {e}")


def test_table_shows_html_in_cells_and_names_as_text():
    import pandas as pd

    from lib.report.plots import table
    df = pd.DataFrame({"<b>model</b>": ["<script>alert(1)</script>", "a & b"], "F1": [0.87654, 1234.5], "n": [1200, 3]},
                      index=["<i>x</i>", "y"])
    page = table(df, highlight="y").data
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    soup = BeautifulSoup(page, "html.parser")
    cells = [td.get_text() for td in soup.find_all("td")]
    # one number of decimals per column, from its median (617: 1 decimal); integers with separators
    assert cells == ["<script>alert(1)</script>", "0.9", "1,200", "a & b", "1,234.5", "3"]
    assert [th.get_text() for th in soup.find_all("th")][1:] == ["<b>model</b>", "F1", "n", "<i>x</i>", "y"]  # after the corner


def test_whole_numbers_show_without_decimals():
    import pandas as pd

    from lib.report.plots import column_format
    # stage 05's row numbers beside its yardstick rows (""), stage 04's head counts stored as floats
    numbers = {"#": pd.Series([0, 1, 33, ""]), "heads": pd.Series([72.0, 50.0, 36.0]), "rate": pd.Series([1.0, 0.0]),
               "f1": pd.Series([0.5, 12.0])}
    shown = {k: [column_format(s)(x) for x in s] for k, s in numbers.items()}
    assert shown == {"#": ["0", "1", "33", ""], "heads": ["72", "50", "36"], "rate": ["1.000", "0.000"],
                     "f1": ["0.500", "12.000"]}


def test_the_facts_line_names_the_training_seeds_only_where_a_stage_trained_with_several():
    one = [{"seed": 7, "params": {"seeds": 1}}, {"seed": 7, "params": {}}]
    assert render._seed_words(one) == "seed 7"
    assert render._seed_words(one + [{"seed": 7, "params": {"seeds": 3}}]) == "seed 7 · training seeds 7, 8, 9"
