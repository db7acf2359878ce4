"""Offline HTML of executed notebooks, and reports/index.html: the study's dashboard, read from the stages' JSON."""
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
from lib.core.seeds import training_seeds
from lib.core.stats import delta_cell, family_size, rule_text
from lib.report.card import CARD_CSS, badge, machine, read_results, study_card
from lib.report.page import for_readers

REMOTE_SCRIPT = re.compile(r"<(script|link|img)[^>]+(src|href)=[\"']https?://", re.I)
# what the index shows of stage 05's table: column -> (heading with its unit, format); text columns are named in TEXT
BENCH_COLUMNS = {"name": ("variant", "{}"), "val_macro_f1": ("val macro-F1", "{:.3f}"),
                 "test_macro_f1": ("test macro-F1", "{:.3f}"), "test_delta": ("test Δ vs teacher, points [95% CI]", "{}"),
                 "reading": ("on test", "{}"), "test_p_holm": ("p, Holm-adjusted", "{:.3f}"),
                 "test_mcnemar_p": ("McNemar p (accuracy, unadjusted)", "{:.3f}"),
                 "latency_median_ms": ("latency, ms (batch 1, median)", "{:.2f}"),
                 "speedup_vs_teacher": ("faster than teacher", "{:.1f}x"), "disk_mb": ("disk, MB", "{:.1f}"),
                 "size_ratio_vs_teacher": ("smaller than teacher", "{:.1f}x")}
# the out-of-domain table beside it, when stage 01 wrote the tweet sets
OOD_BENCH_COLUMNS = {"name": ("variant", "{}"), "val_macro_f1": ("val macro-F1", "{:.3f}"),
                     "ood_val_macro_f1": ("OOD-val macro-F1", "{:.3f}"), "ood_val_retention": ("OOD-val kept (share of the teacher)", "{:.3f}"),
                     "test_macro_f1": ("test macro-F1", "{:.3f}"), "ood_test_macro_f1": ("OOD-test macro-F1", "{:.3f}"),
                     "ood_test_delta": ("OOD-test Δ vs teacher, points [95% CI]", "{}"),
                     "ood_test_retention": ("OOD-test kept (share of the teacher)", "{:.3f}")}
TEXT = {"name", "reading"}
SPEED = re.compile(r"speed-?up|faster", re.I)
THUMBNAILS = [(SOURCE, "learning_curves", "Teacher learning curves"), (BENCHMARK, "pareto", "F1 vs latency and size")]


def render_html(nb, out_path: Path, card: str = "") -> None:
    """Offline HTML (no CDN scripts; plots are inline PNG) of an executed notebook, as readers should see it:
    outputs only (the code is the .py notebook's), the card first when given."""
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(REPO_ROOT / "templates")],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    nb = for_readers(nb, card)
    nb.metadata["title"] = f"FinCompress: {Path(out_path).stem}"  # else every tab reads "Notebook"
    body, _ = exporter.from_notebook_node(nb)
    if REMOTE_SCRIPT.search(body):
        raise FinCompressError("rendered report references a remote script; fix templates/offline")
    write_text_atomic(out_path, body)


def write_index(reports_dir: Path, statuses: dict) -> Path:
    """reports/index.html: the study's answer first (the card), run facts, per stage its status, run time, goal
    badges and headline; stage 05's benchmark table with the recommendation highlighted; thumbnails."""
    reports_dir = Path(reports_dir)
    found = read_results(reports_dir)
    results = {stage: found.get(stage, {}) for stage in NAMES}
    path = reports_dir / "run_all.json"
    run = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    # wall time as run_all measured it (kernel start and rendering included); the stage's own for skipped stages
    times = {stage: run.get("seconds", {}).get(stage) or results[stage].get("run_info", {}).get("seconds", 0)
             for stage in NAMES}
    rows = [_stage_row(reports_dir, stage, statuses.get(stage, "not run"), results[stage], times[stage])
            for stage in NAMES]
    page = INDEX_TEMPLATE.format(css=CARD_CSS, card=study_card(results), facts=_facts(results, run, sum(times.values())),
                                 rows="\n".join(rows), timing=_timing_notes(results), thumbs=_thumbnails(reports_dir),
                                 bench=_bench_table(results[BENCHMARK]))
    if REMOTE_SCRIPT.search(page):
        raise FinCompressError("reports/index.html references a remote asset; the index must open offline")
    write_text_atomic(reports_dir / "index.html", page)
    return reports_dir / "index.html"


def timing_conditions(params: dict) -> str:
    """How a stage before 05 times its models, in words; '' for a stage that does not time in its own process."""
    if "latency_seq_len" not in params:
        return ""
    return (f"batch-1 median over {params.get('latency_n', '?')} test sentences padded or cut to "
            f"{params['latency_seq_len']} tokens, {params.get('threads', '?')} threads, inside the stage's process")


def in_stage_timing(params: dict) -> str:
    """A stage table's caption on its speeds: they differ from stage 05's, which times every model with one harness."""
    return (f"this stage's own timing ({timing_conditions(params)}), to check its goals; stage 05 times every model "
            f"again with one harness, and its figures are the ones to compare across stages")


def _timing_notes(results: dict) -> str:
    conditions = {stage: timing_conditions(r.get("run_info", {}).get("params", {})) for stage, r in results.items()}
    notes = "".join(f"<li>{stage}: {html.escape(text)}</li>" for stage, text in conditions.items() if text)
    if not notes:
        return ""
    return ("<p class='note'>† A speed marked † is its stage's own timing, under that stage's conditions; stage 05 "
            "times every model again with one harness (natural-length validation sentences, a fresh process per "
            f"model): its figures, in the card and the table below, are the ones to compare.</p><ul class='note'>{notes}</ul>")


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
            f"({len(infos)} stages) · <b>run</b> {kind} · {_seed_words(infos)}</p>")


def _seed_words(infos: list[dict]) -> str:
    """The study's seed, and the training seeds where a stage trained with more than one."""
    seed = infos[-1].get("seed", "?")
    n = max((i.get("params", {}).get("seeds", 1) for i in infos), default=1)
    if n == 1 or not isinstance(seed, int):
        return f"seed {seed}"
    return f"seed {seed} · training seeds {', '.join(map(str, training_seeds(seed, n)))}"


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if seconds else "–"


def _stage_row(reports_dir: Path, stage: str, status: str, result: dict, seconds: float) -> str:
    link = f'<a href="{stage}.html">{stage}</a>' if (reports_dir / f"{stage}.html").is_file() else stage
    mark = "†" if timing_conditions(result.get("run_info", {}).get("params", {})) else ""  # this stage's own timing: see the note under the table
    heads = "".join(f"<li>{html.escape(str(k))}: <b>{_fmt(k, v)}</b>{mark if SPEED.search(str(k)) else ''}</li>"
                    for k, v in result.get("headline", {}).items())
    goals = "".join(badge(c, stage, mark if c.get("metric") == "speedup" else "") for c in result.get("goals", []))
    goals = goals or "<li class='none'>no goals</li>"
    state = status.split()[0].rstrip(":") if status else "not"
    status = re.sub(r" \(\d+ s\)$", "", status)  # the time has its own column
    return (f"<tr class='{state}'><td>{link}</td><td class='status'>{html.escape(status)}</td><td>{_duration(seconds)}</td>"
            f"<td><ul class='goals'>{goals}</ul></td><td><ul>{heads}</ul></td></tr>")


def _thumbnails(reports_dir: Path) -> str:
    cells = [f"<figure><a href='img/{stage}_{name}.png'><img src='img/{stage}_{name}.png' alt='{html.escape(title)}'></a>"
             f"<figcaption><a href='{stage}.html'>{html.escape(title)}</a></figcaption></figure>"
             for stage, name, title in THUMBNAILS if (reports_dir / "img" / f"{stage}_{name}.png").is_file()]
    return f"<div class='thumbs'>{''.join(cells)}</div>" if cells else ""


def _bench_row(i: int, r: dict, recommended: str, columns: dict) -> str:
    r = {**r, "disk_mb": r["disk_bytes"] / 1e6,
         **{f"{s}_delta": delta_cell(r[f"{s}_delta_pts"], r[f"{s}_delta_ci_low"], r[f"{s}_delta_ci_high"])
            for s in ("test", "ood_test") if f"{s}_delta_pts" in r},
         "reading": r["test_reading"]}
    rec = r["name"] == recommended
    cells = "".join(f"<td{'' if k in TEXT else ' class=num'}>{'★ ' if rec and k == 'name' else ''}"
                    f"{html.escape(fmt.format(r[k]) if r.get(k) is not None else '–')}</td>" for k, (_, fmt) in columns.items())
    return f"<tr{' class=rec' if rec else ''}><td class=num>{i}</td>{cells}</tr>"


def _table(table: list[dict], recommended: str, columns: dict, caption: str) -> str:
    columns = {k: v for k, v in columns.items() if k in table[0] or k in ("disk_mb", "test_delta", "ood_test_delta",
                                                                          "reading")}
    head = "<th>#</th>" + "".join(f"<th{' class=text' if k in TEXT else ''}>{html.escape(h)}</th>"
                                  for k, (h, _) in columns.items())
    body = "".join(_bench_row(i, r, recommended, columns) for i, r in enumerate(table))
    return (f"<div class='scroll'><table class='bench'><caption>{caption}</caption><tr>{head}</tr>{body}</table>"
            f"</div>")


def _bench_table(result: dict) -> str:
    """The benchmark's headline table, when it has run: headings with units, fixed decimals, the pick highlighted."""
    table = result.get("metrics", {}).get("table", [])
    if not table or "test_delta_pts" not in table[0]:
        return ""
    recommended = result.get("headline", {}).get("recommended")
    n = result.get("run_info", {}).get("params", {}).get("latency_n", "?")
    caption = (f"Every variant against the FP32 PyTorch teacher (row 0), all measured by stage 05's one harness on "
               f"{html.escape(machine(result))}. Macro-F1 on validation (decides) and test (reported). Δ: variant "
               f"minus teacher in points, negative = worse, with its paired bootstrap 95% interval. <i>On test</i>: "
               f"{html.escape(rule_text(family_size([r.get('test_p_holm') for r in table])))}. "
               f"Latency: median batch-1 time over {n} validation sentences at their natural length. ★ and the shaded "
               f"row: the recommended variant; # numbers the points of the <a href='{BENCHMARK}.html'>Pareto plot</a>.")
    ood = ""
    if "ood_test_delta_pts" in table[0]:
        ood = _table(table, recommended, OOD_BENCH_COLUMNS, "Out of domain (financial tweets) beside in domain: "
                     "macro-F1, and the share of the teacher's macro-F1 each variant keeps; OOD-val decides with a "
                     "retention goal, OOD-test is reported with its paired Δ [95% CI].")
    return "<h2>Benchmark (CPU): chosen on validation, test reported</h2>" + _table(table, recommended, BENCH_COLUMNS,
                                                                                      caption) + ood


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
<style>body{{font-family:system-ui,sans-serif;max-width:84em;margin:1em auto;padding:0 1em;color:#222}}
h1{{margin:.2em 0}} table{{border-collapse:collapse}} caption{{caption-side:top;text-align:left;font-size:.9em;padding:.3em 0;color:#333}}
td,th{{border:1px solid #ccc;padding:.35em .5em;vertical-align:top;text-align:left}} td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.stages{{width:100%}} th{{background:#f3f3f3}} tr.failed td,tr.interrupted td{{background:#fdd}} tr.ok td.status{{color:#17692c}}
ul{{margin:0;padding-left:1.1em}} ul.goals{{list-style:none;padding-left:0}} li.goal{{margin:.15em 0}}
.facts{{background:#f6f8fa;padding:.6em .8em;border-radius:4px}} .scroll{{overflow-x:auto;max-width:100%}}
table.bench{{font-size:.84em}} table.bench td{{white-space:nowrap;padding:.3em .4em}} table.bench th{{max-width:6em;vertical-align:bottom;text-align:right;padding:.3em .4em}} table.bench th.text{{text-align:left}}
tr.rec td{{background:#fff1b8;font-weight:bold}} .note{{font-size:.85em;color:#444}}
.thumbs{{display:flex;gap:1.5em;flex-wrap:wrap;margin:1em 0}} .thumbs img{{max-height:320px;max-width:100%;border:1px solid #ccc}}
figure{{margin:0}} figcaption{{font-size:.9em}} {css}</style></head><body>
<h1>FinCompress study</h1>
{card}
{facts}
<p>Each stage is a notebook executed by <code>run_all.py</code>; its report links from its name, its metrics JSON
sits next to it. Goals are judged on validation; test figures are reported.</p>
<div class="scroll"><table class="stages"><tr><th>stage</th><th>status</th><th>run time</th><th>goals</th><th>headline</th></tr>
{rows}
</table></div>
{timing}
{thumbs}
{bench}
</body></html>
"""
