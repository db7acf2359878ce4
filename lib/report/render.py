"""Offline HTML of executed notebooks, and reports/index.html: the study's dashboard, read from the stages' JSON."""
import copy
import datetime
import html
import json
import numbers
import re
from pathlib import Path

import numpy as np

from lib.core.errors import FinCompressError
from lib.core.files import REPO_ROOT, write_text_atomic
from lib.core.pipeline import BENCHMARK, NAMES, SOURCE
from lib.core.stats import delta_cell, verdict_word

REMOTE_SCRIPT = re.compile(r"<(script|link|img)[^>]+(src|href)=[\"']https?://", re.I)
# what the index shows of stage 05's table: column -> (heading, format)
BENCH_COLUMNS = {"name": ("variant", "{}"), "val_macro_f1": ("val macro-F1", "{:.3f}"),
                 "test_macro_f1": ("test macro-F1", "{:.3f}"), "test_delta": ("test Δ vs teacher (pts) [95% CI]", "{}"),
                 "test_mcnemar_p": ("McNemar p", "{:.3f}"), "reading": ("on test", "{}"),
                 "latency_median_ms": ("latency (ms)", "{:.2f}"), "speedup_vs_teacher": ("speed-up", "{:.1f}x"),
                 "disk_mb": ("disk (MB)", "{:.1f}"), "size_ratio_vs_teacher": ("smaller", "{:.1f}x")}
# the out-of-domain table beside it, when stage 01 wrote the tweet sets
OOD_BENCH_COLUMNS = {"name": ("variant", "{}"), "val_macro_f1": ("val macro-F1", "{:.3f}"),
                     "ood_val_macro_f1": ("OOD-val macro-F1", "{:.3f}"), "ood_val_retention": ("OOD-val retention", "{:.3f}"),
                     "test_macro_f1": ("test macro-F1", "{:.3f}"), "ood_test_macro_f1": ("OOD-test macro-F1", "{:.3f}"),
                     "ood_test_delta": ("OOD-test Δ vs teacher (pts) [95% CI]", "{}"),
                     "ood_test_retention": ("OOD-test retention", "{:.3f}")}
THUMBNAILS = [(SOURCE, "learning_curves", "Teacher learning curves"), (BENCHMARK, "pareto", "F1 vs latency and size")]


def for_readers(nb):
    """The executed notebook without its stderr streams (progress bars, warnings, library logs): run_all showed
    them on the terminal as they came; the report keeps stdout (one summary line per epoch) and the results.
    Each figure's alt text is the heading of the section it sits in (the template reads it)."""
    nb, heading = copy.deepcopy(nb), "Figure"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = next((line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")),
                           heading)
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
            for o in cell.outputs:
                if "image/png" in o.get("data", {}):
                    o.setdefault("metadata", {}).setdefault("image/png", {}).setdefault("alt", f"Figure: {heading}")
    return nb


def render_html(nb, out_path: Path) -> None:
    """Offline HTML (no CDN scripts; plots are inline PNG) of an executed notebook, as readers should see it."""
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(REPO_ROOT / "templates")])
    nb = for_readers(nb)
    nb.metadata["title"] = f"FinCompress: {Path(out_path).stem}"  # else every tab reads "Notebook"
    body, _ = exporter.from_notebook_node(nb)
    if REMOTE_SCRIPT.search(body):
        raise FinCompressError("rendered report references a remote script; fix templates/offline")
    write_text_atomic(out_path, body)


def _read(reports_dir: Path, name: str) -> dict:
    path = reports_dir / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_index(reports_dir: Path, statuses: dict) -> Path:
    """reports/index.html: run facts at the top; per stage its status, run time, goal badges and headline;
    stage 05's benchmark table with the recommendation highlighted; thumbnails linked to their reports."""
    reports_dir = Path(reports_dir)
    results = {stage: _read(reports_dir, f"{stage}.json") for stage in NAMES}
    run = _read(reports_dir, "run_all.json")
    # wall time as run_all measured it (kernel start and rendering included); the stage's own for skipped stages
    times = {stage: run.get("seconds", {}).get(stage) or results[stage].get("run_info", {}).get("seconds", 0)
             for stage in NAMES}
    rows = [_stage_row(reports_dir, stage, statuses.get(stage, "not run"), results[stage], times[stage])
            for stage in NAMES]
    page = INDEX_TEMPLATE.format(facts=_facts(results, run, sum(times.values())), rows="\n".join(rows),
                                 thumbs=_thumbnails(reports_dir), bench=_bench_table(results[BENCHMARK]))
    if REMOTE_SCRIPT.search(page):
        raise FinCompressError("reports/index.html references a remote asset; the index must open offline")
    write_text_atomic(reports_dir / "index.html", page)
    return reports_dir / "index.html"


def _facts(results: dict, run: dict, total: float) -> str:
    """Commit, date, hardware and total run time of the results shown."""
    infos = [r["run_info"] for r in results.values() if r.get("run_info")]
    if not infos:
        return "<p>No stage has run yet.</p>"
    last = infos[-1]
    commits = sorted({i.get("git_commit", "unknown") for i in infos})
    hw = last.get("hardware", {})
    device = hw.get("gpu") or f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} cores)"
    dates = [i["finished"] for i in infos if i.get("finished")]
    when = max(dates).replace("T", " ").replace("+00:00", " UTC") if dates else "unknown"
    kind = ", ".join(k for k in ("smoke", "gpu") if run.get(k)) or "full"
    return (f"<p class='facts'><b>commit</b> <code>{html.escape(', '.join(commits))}</code> · <b>finished</b> "
            f"{html.escape(when)} · <b>hardware</b> {html.escape(device)} · <b>total run time</b> {_duration(total)} "
            f"({len(infos)} stages) · <b>run</b> {kind} · seed {last.get('seed', '?')}</p>")


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if seconds else "–"


def _badge(check: dict, stage: str) -> str:
    met = "MET" if check["met"] else "NOT MET"
    reads = check.get("reads") or f"{check['value']:.4g}"
    # stage too: 04's and 05's goals can share a name and a subject (the shipped model may be a pruned level)
    return (f"<li class='goal' data-stage='{stage}' data-goal='{html.escape(check['goal'])}' "
            f"data-subject='{html.escape(check['subject'])}'>"
            f"<span class='badge {'met' if check['met'] else 'missed'}'>{met}</span> "
            f"{html.escape(check['subject'])}: {html.escape(check['text'])} <b>({html.escape(reads)})</b></li>")


def _stage_row(reports_dir: Path, stage: str, status: str, result: dict, seconds: float) -> str:
    link = f'<a href="{stage}.html">{stage}</a>' if (reports_dir / f"{stage}.html").is_file() else stage
    heads = "".join(f"<li>{html.escape(str(k))}: <b>{_fmt(k, v)}</b></li>" for k, v in result.get("headline", {}).items())
    goals = "".join(_badge(c, stage) for c in result.get("goals", [])) or "<li class='none'>no goals</li>"
    state = status.split()[0].rstrip(":") if status else "not"
    status = re.sub(r" \(\d+ s\)$", "", status)  # the time has its own column
    return (f"<tr class='{state}'><td>{link}</td><td class='status'>{html.escape(status)}</td><td>{_duration(seconds)}</td>"
            f"<td><ul class='goals'>{goals}</ul></td><td><ul>{heads}</ul></td></tr>")


def _thumbnails(reports_dir: Path) -> str:
    cells = [f"<figure><a href='img/{stage}_{name}.png'><img src='img/{stage}_{name}.png' alt='{html.escape(title)}'></a>"
             f"<figcaption><a href='{stage}.html'>{html.escape(title)}</a></figcaption></figure>"
             for stage, name, title in THUMBNAILS if (reports_dir / "img" / f"{stage}_{name}.png").is_file()]
    return f"<div class='thumbs'>{''.join(cells)}</div>" if cells else ""


def _bench_row(i: int, r: dict, recommended: str, columns: dict = BENCH_COLUMNS) -> str:
    r = {**r, "disk_mb": r["disk_bytes"] / 1e6,
         **{f"{s}_delta": delta_cell(r[f"{s}_delta_pts"], r[f"{s}_delta_ci_low"], r[f"{s}_delta_ci_high"])
            for s in ("test", "ood_test") if f"{s}_delta_pts" in r},
         "reading": verdict_word(r["test_delta_ci_low"], r["test_delta_ci_high"])}
    rec = r["name"] == recommended
    cells = "".join(f"<td>{'★ ' if rec and k == 'name' else ''}{html.escape(fmt.format(r[k]))}</td>"
                    for k, (_, fmt) in columns.items())
    return f"<tr{' class=rec' if rec else ''}><td>{i}</td>{cells}</tr>"


def _bench_table(result: dict) -> str:
    """The benchmark's headline table, when it has run: human headings, MB, 2-3 decimals, the pick highlighted."""
    table = result.get("metrics", {}).get("table", [])
    if not table or "test_delta_pts" not in table[0]:
        return ""
    recommended = result.get("headline", {}).get("recommended")
    head = "<th>#</th>" + "".join(f"<th>{html.escape(h)}</th>" for h, _ in BENCH_COLUMNS.values())
    body = "".join(_bench_row(i, r, recommended) for i, r in enumerate(table))
    return (f"<h2>Benchmark (CPU): chosen on validation, test reported</h2><p>Δ: variant minus teacher in macro-F1 "
            f"points, negative = worse, with its paired bootstrap 95% interval; <i>indistinguishable</i>: the interval "
            f"contains 0 (within noise). ★ and the shaded row: the recommended variant. # numbers the points of the "
            f"<a href='{BENCHMARK}.html'>Pareto plot</a>.</p>"
            f"<div class='scroll'><table class='bench'><tr>{head}</tr>{body}</table></div>" + _ood_table(table, recommended))


def _ood_table(table: list[dict], recommended: str) -> str:
    """In domain beside out of domain (financial tweets): macro-F1 and retention vs the teacher, OOD-test's paired Δ."""
    if "ood_test_delta_pts" not in table[0]:
        return ""
    head = "<th>#</th>" + "".join(f"<th>{html.escape(h)}</th>" for h, _ in OOD_BENCH_COLUMNS.values())
    body = "".join(_bench_row(i, r, recommended, OOD_BENCH_COLUMNS) for i, r in enumerate(table))
    return ("<h3>Out of domain (financial tweets): OOD-val decides with a retention goal, OOD-test reported</h3>"
            f"<div class='scroll'><table class='bench'><tr>{head}</tr>{body}</table></div>")


def number(x) -> str:
    """A figure as a reader wants it: 3 decimals below 10, 2 below 100, 1 below 1000, none above; thousands
    separated; yes/no for booleans; text as it is."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return f"{x:,}"
    if isinstance(x, numbers.Real):
        if x != x:
            return "–"
        a = abs(x)
        return f"{x:,.{3 if a < 10 else 2 if a < 100 else 1 if a < 1000 else 0}f}"
    return str(x)


def _fmt(key: str, v) -> str:
    """A headline value; a delta (Δ in its name) signed, as every delta is shown."""
    return f"{v:+.2f}" if "Δ" in key and isinstance(v, float) else html.escape(number(v))


INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>FinCompress study</title>
<style>body{{font-family:system-ui,sans-serif;max-width:84em;margin:1.5em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:.35em .5em;vertical-align:top;text-align:left}}
.stages{{width:100%}} th{{background:#f3f3f3}} tr.failed td,tr.interrupted td{{background:#fdd}} tr.ok td.status{{color:#17692c}}
ul{{margin:0;padding-left:1.1em}} ul.goals{{list-style:none;padding-left:0}} li.goal{{margin:.15em 0}}
.badge{{display:inline-block;min-width:5.6em;text-align:center;font-weight:bold;font-size:.85em;border-radius:3px;
padding:.05em .4em;color:#fff}} .badge.met{{background:#17692c}} .badge.missed{{background:#b3261e}}
.facts{{background:#f6f8fa;padding:.6em .8em;border-radius:4px}} .scroll{{overflow-x:auto;max-width:100%}}
table.bench{{font-size:.92em}} table.bench td{{white-space:nowrap}} table.bench th{{max-width:7.5em;vertical-align:bottom}} tr.rec td{{background:#fff1b8;font-weight:bold}}
.thumbs{{display:flex;gap:1.5em;flex-wrap:wrap;margin:1em 0}} .thumbs img{{height:220px;border:1px solid #ccc}}
figure{{margin:0}} figcaption{{font-size:.9em}}</style></head><body>
<h1>FinCompress study</h1>
{facts}
<p>Each stage is a notebook executed by <code>run_all.py</code>; its report links from its name, its metrics JSON
sits next to it. Goals are judged on validation; test figures are reported.</p>
<table class="stages"><tr><th>stage</th><th>status</th><th>run time</th><th>goals</th><th>headline</th></tr>
{rows}
</table>
{thumbs}
{bench}
</body></html>
"""
