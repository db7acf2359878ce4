"""Plots, stage metrics JSON, offline HTML rendering of executed notebooks, and the index page."""
import html
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix

from lib.common import REPO_ROOT, FinCompressError, write_json, write_text_atomic
from lib.data import LABELS

STAGES = ["01_data_teacher", "02_distillation", "03_quantization", "04_pruning", "05_benchmark"]


def plot_distribution(summary: dict):
    """Class counts per split and per source, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, key, title in zip(axes, ["class_counts", "source_counts"], ["per split", "per source"]):
        pd.DataFrame(summary[key]).T[LABELS].plot.bar(ax=ax, rot=0)
        ax.set_title(f"Class distribution {title}")
        ax.set_ylabel("sentences")
    fig.tight_layout()
    return fig


def plot_history(histories: dict, target: float):
    """Train/val loss and val macro-F1 per epoch (with the target line) for one or more runs."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, hist in histories.items():
        h = pd.DataFrame(hist)
        line, = ax_loss.plot(h["epoch"], h["train_loss"], marker="o", label=f"{name} train")
        ax_loss.plot(h["epoch"], h["val_loss"], marker="s", ls="--", color=line.get_color(), label=f"{name} val")
        ax_f1.plot(h["epoch"], h["val_f1"], marker="o", color=line.get_color(), label=name)
    ax_f1.axhline(target, color="red", ls=":", label=f"target {target:.2f}")
    ax_loss.set(title="Loss", xlabel="epoch")
    ax_f1.set(title="Validation macro-F1", xlabel="epoch")
    for ax in (ax_loss, ax_f1):
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def plot_confusions(results: dict):
    """Row-normalised confusion matrices (counts annotated), one panel per (title -> metrics)."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (title, m) in zip(axes[0], results.items()):
        cm = confusion_matrix(m["labels"], m["preds"], labels=range(len(LABELS)))
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        annot = np.array([[f"{n}\n{p:.0%}" for n, p in zip(r, q)] for r, q in zip(cm, norm)])
        sns.heatmap(norm, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=LABELS, yticklabels=LABELS)
        ax.set(title=f"{title} (F1 {m['macro_f1']:.3f})", xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def plot_per_class_f1(results: dict):
    """Grouped bars of per-class F1 for each model/split."""
    df = pd.DataFrame({name: m["per_class_f1"] for name, m in results.items()}).T[LABELS]
    ax = df.plot.bar(rot=0, figsize=(max(6, 1.6 * len(df)), 3.5), ylim=(0, 1.05))
    ax.set(title="Per-class F1", ylabel="F1")
    ax.legend(fontsize=8, loc="lower right")
    for c in ax.containers:
        ax.bar_label(c, fmt="%.2f", fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


def metrics_table(results: dict) -> pd.DataFrame:
    rows = {name: {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
                   **{f"f1_{k}": v for k, v in m["per_class_f1"].items()}} for name, m in results.items()}
    return pd.DataFrame(rows).T.round(4)


def target_verdict(name: str, f1: float, target: float) -> str:
    """One plain sentence: met or missed, by how much."""
    gap = f1 - target
    word = "MET" if gap >= 0 else "NOT MET"
    return f"**Target {word}:** {name} validation macro-F1 = {f1:.4f} vs target {target:.2f} ({gap:+.4f})."


def write_stage_metrics(paths: dict, stage: str, info: dict, metrics: dict, headline: dict) -> Path:
    """The machine-readable result of a stage; later stages and tests read this, never HTML."""
    path = paths["reports"] / f"{stage}.json"
    write_json(path, {"stage": stage, "run_info": info, "headline": headline, "metrics": metrics})
    return path


def read_stage_metrics(reports_dir: Path, stage: str) -> dict:
    path = Path(reports_dir) / f"{stage}.json"
    if not path.is_file():
        raise FinCompressError(f"{path} is missing; run stage {stage[:2]} first (python run_all.py --only {stage[:2]})")
    return json.loads(path.read_text(encoding="utf-8"))


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
    """reports/index.html: every stage, its status, link and headline metrics from its JSON."""
    reports_dir = Path(reports_dir)
    rows = []
    for stage in STAGES:
        status = statuses.get(stage, "not run")
        metrics_path = reports_dir / f"{stage}.json"
        headline = json.loads(metrics_path.read_text())["headline"] if metrics_path.is_file() else {}
        report = reports_dir / f"{stage}.html"
        link = f'<a href="{stage}.html">{stage}</a>' if report.is_file() else stage
        cells = "".join(f"<li>{html.escape(str(k))}: <b>{_fmt(v)}</b></li>" for k, v in headline.items())
        rows.append(f"<tr class='{status.split()[0]}'><td>{link}</td><td>{html.escape(status)}</td><td><ul>{cells}</ul></td></tr>")
    page = INDEX_TEMPLATE.format(rows="\n".join(rows), bench=_bench_table(reports_dir))
    write_text_atomic(reports_dir / "index.html", page)
    return reports_dir / "index.html"


def _bench_table(reports_dir: Path) -> str:
    """The stage-05 headline table, when the benchmark has run."""
    path = reports_dir / "05_benchmark.json"
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
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top}} tr.failed td{{background:#fdd}} tr.ok td:nth-child(2){{color:green}}
ul{{margin:0;padding-left:1.2em}}</style></head><body>
<h1>FinCompress reports</h1>
<p>Each stage is a notebook executed by <code>run_all.py</code>; its metrics JSON sits next to its HTML.</p>
<table><tr><th>stage</th><th>status</th><th>headline metrics</th></tr>
{rows}
</table>
{bench}
</body></html>
"""


def data_summary(s: dict) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in s["split_sizes"].items())
    bad = sum(s["malformed_lines"].values())
    return (f"Source: `{s['origin']}` (PhraseBank {s['agreement']}). Parsed **{s['rows_parsed']}** sentences; "
            f"skipped **{bad}** malformed lines {s['malformed_lines']}; removed **{s['duplicates_removed']}** duplicates; "
            f"dropped **{s['conflicting_texts_dropped']}** texts ({s['conflicting_rows_dropped']} rows) with conflicting "
            f"labels. Kept **{s['rows_kept']}**: {sizes}. Also saved: **{s.get('transfer_sentences', 0)}** unlabeled "
            f"PhraseBank sentences below {s['agreement']}, outside every split, for distillation (stage 02).")


def per_source_scores(test_df: pd.DataFrame, preds) -> pd.DataFrame:
    """Test macro-F1 and accuracy per data source: FiQA posts and PhraseBank news differ in difficulty."""
    from lib.train import scores
    df = test_df.assign(pred=list(preds))
    rows = {src: {"n": len(g), **{k: v for k, v in scores(g["label"], g["pred"]).items() if k != "per_class_f1"}}
            for src, g in df.groupby("source")}
    return pd.DataFrame(rows).T.round(4)


def teacher_interpretation(result: dict, summary: dict, by_source: pd.DataFrame, target: float) -> str:
    """The study's reading of the teacher run, written from the numbers rather than fixed in advance."""
    val, test = result["val"], result["test"]
    weakest = min(test["per_class_f1"], key=test["per_class_f1"].get)
    hardest = by_source["macro_f1"].idxmin()
    met = "meets" if val["macro_f1"] >= target else "does **not** meet"
    return "\n".join([
        f"* The teacher {met} the {target:.2f} validation target ({val['macro_f1']:.4f}); test macro-F1 is "
        f"{test['macro_f1']:.4f} ({test['macro_f1'] - val['macro_f1']:+.4f} vs validation), chosen at epoch "
        f"{result['best_epoch']} of {len(result['history'])} run.",
        f"* Weakest class on test: **{weakest}** (F1 {test['per_class_f1'][weakest]:.3f}). Negative is the smallest "
        f"class ({summary['class_counts']['train']['negative']} training sentences), so it is the first place to "
        "watch when compressing.",
        f"* Hardest source: **{hardest}** (macro-F1 {by_source.loc[hardest, 'macro_f1']:.3f}); FiQA labels come from "
        "thresholded continuous scores on short, informal texts, so they are noisier than PhraseBank's expert agreement.",
        "* Every later stage compares against these test figures on exactly this split."])
