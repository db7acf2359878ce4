"""Offline HTML of executed notebooks, and reports/index.html: every stage's status, headline and goals."""
import html
import json
import re
from pathlib import Path

from lib.common import REPO_ROOT, FinCompressError, write_text_atomic
from lib.pipeline import BENCHMARK, NAMES

REMOTE_SCRIPT = re.compile(r"<(script|link)[^>]+(src|href)=[\"']https?://", re.I)


def render_html(nb, out_path: Path) -> None:
    """Offline HTML (no CDN scripts; plots are inline PNG) of an executed notebook."""
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(REPO_ROOT / "templates")])
    body, _ = exporter.from_notebook_node(nb)
    if REMOTE_SCRIPT.search(body):
        raise FinCompressError("rendered report references a remote script; fix templates/offline")
    write_text_atomic(out_path, body)


def write_index(reports_dir: Path, statuses: dict) -> Path:
    """reports/index.html: every stage in run order, its status, link, headline metrics and goals from its JSON."""
    reports_dir = Path(reports_dir)
    rows = []
    for stage in NAMES:
        status = statuses.get(stage, "not run")
        path = reports_dir / f"{stage}.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
        link = f'<a href="{stage}.html">{stage}</a>' if (reports_dir / f"{stage}.html").is_file() else stage
        cells = "".join(f"<li>{html.escape(str(k))}: <b>{_fmt(v)}</b></li>" for k, v in result.get("headline", {}).items())
        checks = "".join(f"<li class='{'met' if c['met'] else 'missed'}'>{'MET' if c['met'] else 'NOT MET'}: "
                         f"{html.escape(c['subject'])} {html.escape(c['text'])} ({c['value']:.4g})</li>"
                         for c in result.get("goals", []))
        rows.append(f"<tr class='{status.split()[0]}'><td>{link}</td><td>{html.escape(status)}</td>"
                    f"<td><ul>{cells}</ul></td><td><ul>{checks}</ul></td></tr>")
    page = INDEX_TEMPLATE.format(rows="\n".join(rows), bench=_bench_table(reports_dir))
    write_text_atomic(reports_dir / "index.html", page)
    return reports_dir / "index.html"


def _bench_table(reports_dir: Path) -> str:
    """The benchmark's headline table, when it has run."""
    path = reports_dir / f"{BENCHMARK}.json"
    if not path.is_file():
        return ""
    table = json.loads(path.read_text())["metrics"].get("table", [])
    if not table:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in table[0])
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r.values()) + "</tr>" for r in table)
    return f"<h2>Benchmark (test set, CPU)</h2><table><tr>{head}</tr>{body}</table>"


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>FinCompress reports</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto}} table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top}} tr.failed td{{background:#fdd}} tr.ok td:nth-child(2){{color:green}}
ul{{margin:0;padding-left:1.2em}} li.met{{color:green}} li.missed{{color:#b00}}</style></head><body>
<h1>FinCompress reports</h1>
<p>Each stage is a notebook executed by <code>run_all.py</code>; its metrics JSON sits next to its HTML.</p>
<table><tr><th>stage</th><th>status</th><th>headline metrics</th><th>goals</th></tr>
{rows}
</table>
{bench}
</body></html>
"""
