"""Reports read at a glance (issue 32): every page opens with its card, no table clips at 1366 px, a speed from a
stage's own timing says so. Each check returns what it finds, and a planted defect shows it can fail."""
import json
import re
import shutil
import subprocess

import nbformat
import pytest
from bs4 import BeautifulSoup

from lib.core import pipeline
from lib.report import card, page as report_page, render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# appended to a copy of a page: the tables that overflow their box or the window, as the body's data-clipped
PROBE = """<script>
const width = document.documentElement.clientWidth;
const clipped = [...document.querySelectorAll('table')].filter(t => {
  const box = t.parentElement, r = t.getBoundingClientRect();
  return r.right > width + 1 || box.scrollWidth > box.clientWidth + 1;
}).map(t => t.innerText.slice(0, 50).replace(/\\s+/g, ' '));
document.body.setAttribute('data-clipped', JSON.stringify(clipped));
</script>"""


def results_of(reports) -> dict:
    return {s: json.loads((reports / f"{s}.json").read_text()) for s in pipeline.NAMES}


def card_defects(page: str, goals: list[dict], shipped: str | None = None) -> list[str]:
    """The card is there, before every table and figure, with each goal's badge (and the shipped model's name)."""
    soup = BeautifulSoup(page, "html.parser")
    found = soup.find(id="verdict")
    if found is None:
        return ["no card"]
    bad = [f"{t.name} before the card" for t in found.find_all_previous(["table", "img"])]
    bad += [f"no badge for {g['subject']} {g['goal']}" for g in goals
            if not found.find("li", attrs={"data-goal": g["goal"], "data-subject": g["subject"]})]
    if shipped and shipped not in found.get_text():
        bad.append(f"card does not name {shipped}")
    return bad


def unexplained_speeds(index: str, results: dict) -> list[str]:
    """A speed-up goal of stages 02-04 (their own timing) shown on the index without the mark and note that say so."""
    soup = BeautifulSoup(index, "html.parser")
    notes = " ".join(n.get_text(" ") for n in soup.find_all(class_="note"))
    bad = []
    for stage in pipeline.NAMES[1:4]:
        for g in (g for g in results[stage].get("goals", []) if g.get("metric") == "speedup"):
            li = soup.find("li", attrs={"data-stage": stage, "data-goal": g["goal"], "data-subject": g["subject"]})
            if li is None or not li.get_text().endswith("†") or f"{stage}: batch-1 median" not in notes:
                bad.append(f"{stage} {g['subject']}")
    return bad


def empty_sections(page: str) -> list[str]:
    """Headings with no text, table or figure before the next heading of their level or higher."""
    soup = BeautifulSoup(page, "html.parser")
    heads = soup.find_all(re.compile("^h[1-6]$"))
    bad = []
    for i, head in enumerate(heads):
        level = int(head.name[1])
        end = next((h for h in heads[i + 1:] if int(h.name[1]) <= level), None)
        content = False
        for el in head.next_elements:
            if el is end:
                break
            if el.name in ("table", "img", "pre", "details") or (el.name is None and el.strip() and head not in el.parents):
                content = True
                break
        if not content:
            bad.append(head.get_text(" ", strip=True).rstrip("¶ "))
    return bad


def blank_outputs(page: str) -> int:
    """Output areas with nothing to see (no text, table or figure): each is a gap a reader scrolls past."""
    soup = BeautifulSoup(page, "html.parser")
    return sum(1 for o in soup.select(".jp-OutputArea-output")
               if not o.get_text(strip=True) and not o.find(["img", "table", "svg", "iframe", "canvas", "video"]))


RICH_EMPTY = "<pre style=\"white-space:pre;overflow-x:auto;line-height:normal;font-family:Menlo,monospace\"></pre>"


def test_blank_displays_are_dropped_and_the_rest_kept():
    """NNCF's progress bars (rich) leave empty <pre> displays in a notebook; the page drops them, not a table or a
    figure, and a cell left with nothing goes too."""
    show = lambda markup: nbformat.v4.new_output("display_data", data={"text/html": markup, "text/plain": ""})  # noqa: E731
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## Stacked"),
        nbformat.v4.new_code_cell(outputs=[show(RICH_EMPTY), show("<table><tr><td>1.0</td></tr></table>"), figure,
                                           show(RICH_EMPTY)]),
        nbformat.v4.new_code_cell(outputs=[show(RICH_EMPTY), show("<div> </div>")]),
        nbformat.v4.new_markdown_cell("## Next"), nbformat.v4.new_code_cell(outputs=[show("<p>text</p>")])])
    cells = report_page.for_readers(nb).cells
    assert [c.cell_type for c in cells] == ["markdown", "code", "markdown", "code"]
    assert [list(o["data"]) for o in cells[1].outputs] == [["text/html", "text/plain"], ["image/png", "text/plain"]]
    assert blank_outputs(f"<div class='jp-OutputArea-output'>{RICH_EMPTY}</div><div class='jp-OutputArea-output'>"
                         "<img src='x.png'></div>") == 1


def clipped_tables(page_path, tmp_path, width: int = 1366) -> list[str]:
    """Tables that overflow their box or the window of a headless Chromium `width` px wide."""
    probe = tmp_path / f"probe-{page_path.name}"
    probe.write_text(page_path.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--window-size={width},900", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    attr = BeautifulSoup(dom, "html.parser").body.get("data-clipped")
    assert attr is not None, f"the probe did not run in {page_path.name}"
    return json.loads(attr)


def test_every_page_opens_with_its_card(smoke_run):
    reports = smoke_run / "reports"
    results = results_of(reports)
    shipped = results[pipeline.BENCHMARK]["headline"]["recommended"]
    index = (reports / "index.html").read_text()
    assert not card_defects(index, results[pipeline.BENCHMARK]["goals"], shipped), card_defects(index, [], shipped)
    assert "standing in for ProsusAI/finbert" in index and "untrained" in index
    for stage in pipeline.NAMES:
        page = (reports / f"{stage}.html").read_text()
        assert not card_defects(page, results[stage]["goals"]), (stage, card_defects(page, results[stage]["goals"]))
        soup = BeautifulSoup(page, "html.parser")
        # the code is the .py notebook's; the parameters as a table at the end, the run's local paths nowhere
        assert not soup.select(".jp-CodeCell .jp-InputArea") and soup.find(id="parameters") and str(smoke_run) not in page, stage
        assert soup.find("details", class_="log") or stage == "06_stacking", stage
        assert not empty_sections(page), (stage, empty_sections(page))
        assert not blank_outputs(page), (stage, blank_outputs(page))
    assert empty_sections("<h1>T</h1><p>x</p><h2>A</h2><h2>B</h2><p>y</p><h2>C</h2>") == ["A", "C"]
    assert "epoch 1:" in BeautifulSoup((reports / "02_distillation.html").read_text(), "html.parser").find(
        "details", class_="log").get_text()


def test_card_check_finds_a_missing_or_late_card(smoke_run, tmp_path):
    reports = smoke_run / "reports"
    nb = nbformat.read(reports / "executed" / "04_pruning.ipynb", as_version=4)
    goals = results_of(reports)["04_pruning"]["goals"]
    render.render_html(nb, tmp_path / "none.html")
    assert card_defects((tmp_path / "none.html").read_text(), goals) == ["no card"]
    page = (reports / "04_pruning.html").read_text()
    late = re.sub(r"<body[^>]*>", lambda m: m.group(0) + "<table><tr><td>x</td></tr></table>", page, count=1)
    assert card_defects(late, goals) == ["table before the card"]
    assert card_defects(page, goals + [{"goal": "ghost", "subject": "nobody"}]) == ["no badge for nobody ghost"]
    failed = card.page_card(reports, "04_pruning", "RuntimeError: boom")
    assert "failed" in failed and "boom" in failed


def test_speeds_from_a_stage_own_timing_say_so(smoke_run, tmp_path):
    reports = smoke_run / "reports"
    results = results_of(reports)
    assert sum(g.get("metric") == "speedup" for s in pipeline.NAMES[1:4] for g in results[s]["goals"]) >= 3
    assert not unexplained_speeds((reports / "index.html").read_text(), results)
    for stage in pipeline.NAMES[1:4]:  # and each stage's own table caption says whose timing it is
        assert "this stage's own timing (batch-1 median" in (reports / f"{stage}.html").read_text(), stage
    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    stripped = results["02_distillation"]
    del stripped["run_info"]["params"]["latency_seq_len"]  # a stage that no longer says how it timed
    (copy / "02_distillation.json").write_text(json.dumps(stripped))
    render.write_index(copy, {})
    assert unexplained_speeds((copy / "index.html").read_text(), results_of(copy))


@pytest.mark.skipif(not CHROMIUM, reason="needs headless Chromium (Debian package chromium)")
def test_no_table_clips_at_1366_px(smoke_run, tmp_path):
    reports = smoke_run / "reports"
    for name in ["index", *pipeline.NAMES]:
        assert not clipped_tables(reports / f"{name}.html", tmp_path), name
    wide = tmp_path / "wide.html"
    wide.write_text("<html><body><div style='overflow-x:auto'><table><tr>" + "<td>0.123456789</td>" * 40
                    + "</tr></table></div></body></html>")
    assert len(clipped_tables(wide, tmp_path)) == 1  # 40 figures in a row overflow 1366 px: the check sees it
