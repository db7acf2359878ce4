"""Plots and tables every stage draws: class distributions, training curves, confusion matrices, per-class F1,
and the one way a table is shown in a report (its own horizontal scroll box, human column names)."""
import numbers
import os
import re
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix

from lib.core import seeds
from lib.core.variants import LABELS
from lib.report.render import number

# a text cell that is a figure already formatted ("0.523 (0.504-0.541)", "+1.20 [-0.40, +2.90]", "12.5%", "–")
FIGURE = re.compile(r"^[-+−–]?[\d.,]*\d[\d.,]*( ?%| ?x)?( [(\[][-+−]?[\d.,]+(-|, )[-+−]?[\d.,]+[)\]])?$|^[–-]$")
SCROLL_BOX = "fc-table"  # the class of the box every report table sits in (tests/test_reports.py looks for it)


def _numbers_with_gaps(values: pd.Series) -> bool:
    """A column of numbers where some rows have none ('n/a', '–', None): the yardstick rows of stage 05."""
    real = [v for v in values if not (v is None or v in ("n/a", "–", "") or (isinstance(v, float) and v != v))]
    return bool(real) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in real)


def _figure_or_gap(v) -> bool:
    return v in ("", None) or bool(FIGURE.match(str(v)))


def _counts(values: pd.Series) -> bool:
    """Whole numbers only, beside gaps: row numbers, heads, neurons. A float column of whole numbers counts too when
    one of them is at least 2 (a column of 0.0/1.0 is more likely a rate that happened to be exact)."""
    real = [v for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v]
    whole = bool(real) and all(float(v).is_integer() for v in real)
    return whole and (all(isinstance(v, numbers.Integral) for v in real) or max(abs(float(v)) for v in real) >= 2)


def column_format(values: pd.Series):
    """One format for a whole numeric column, so its decimals line up: 3 decimals when its median figure is below
    10, 2 below 100, 1 below 1000, none above; integers with thousands separators; yes/no for booleans."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values):
        return number
    if _counts(values):
        return lambda x: f"{int(x):,}" if isinstance(x, numbers.Real) and x == x else "–" if x is None or x != x else str(x)
    real = [abs(float(v)) for v in values if isinstance(v, numbers.Real) and np.isfinite(float(v))]
    typical = float(np.median(real)) if real else 0  # the median: one slow outlier row keeps the others' decimals
    decimals = 3 if typical < 10 else 2 if typical < 100 else 1 if typical < 1000 else 0
    return lambda x: f"{x:,.{decimals}f}" if isinstance(x, numbers.Real) and x == x else "–" if x is None or x != x else str(x)


def table(df: pd.DataFrame, highlight=None, index: bool = True, caption: str = ""):
    """A DataFrame as report HTML inside a box that scrolls sideways on its own if it is wider than the page:
    numbers right-aligned at one number of decimals per column, text left-aligned, headings that wrap, a caption
    saying what is compared on which split; the row whose index is `highlight` is shaded. index=False hides the
    index (then give the table a column that names rows)."""
    from IPython.display import HTML
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) or _numbers_with_gaps(df[c])]
    figures = [c for c in df.columns if c not in numeric and df[c].map(_figure_or_gap).all()]
    text = [c for c in df.columns if c not in numeric + figures]
    # escape="html": a cell, row or column name holding "<script>" shows as text, whatever text tables come to hold
    formats = {c: column_format(df[c]) if c in numeric else number for c in df.columns}
    styler = (df.style.format(formats, escape="html")
              .format_index(escape="html", axis=0).format_index(escape="html", axis=1)
              .set_properties(subset=text, **{"text-align": "left"})
              .set_properties(subset=numeric + figures, **{"text-align": "right", "font-variant-numeric": "tabular-nums"})
              .hide(names=True, axis="index"))
    if caption:
        styler = styler.set_caption(caption)
    if not index:
        styler = styler.hide(axis="index")
    if highlight is not None:
        styler = styler.apply(lambda r: ["background-color:#fff1b8;font-weight:bold" if r.name == highlight else ""]
                              * len(r), axis=1)
    # headings wrap (short lines of human words), figures never do: a table fits 1366 px without sideways scrolling
    styler = styler.set_table_styles([{"selector": "", "props": "font-size:.85em"},
                                      {"selector": "td", "props": "padding:3px 6px;white-space:nowrap"},
                                      {"selector": "caption", "props": "caption-side:top;text-align:left;"
                                       "font-size:.9em;padding:.3em 0;color:#333"},
                                      {"selector": "th.col_heading", "props": "padding:3px 6px;white-space:normal;"
                                       "max-width:6.5em;vertical-align:bottom;text-align:right"},
                                      {"selector": "th.row_heading", "props": "padding:3px 7px;white-space:nowrap;"
                                       "text-align:left"}])
    return HTML(f'<div class="{SCROLL_BOX}" style="overflow-x:auto;max-width:100%">{styler.to_html()}</div>')


def save_png(fig, path: Path, dpi: int = 110) -> None:
    """A figure as PNG, written to a temp file and renamed, so the index never links a half-written image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def legend_outside(ax, **kw):
    """The legend to the right of the axes, where it covers no data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, frameon=False, fontsize=9, **kw)


def plot_distribution(summary: dict):
    """Class counts per split and per source, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for ax, key, title in zip(axes, ["class_counts", "source_counts"], ["per split", "per source"]):
        pd.DataFrame(summary[key]).T[list(LABELS)].plot.bar(ax=ax, rot=0)
        ax.set_title(f"Class distribution {title}")
        ax.set_ylabel("sentences")
        legend_outside(ax)
    fig.tight_layout()
    return fig


def f1_limits(values, target: float | None = None, margin: float = 0.05, span: float = 0.15) -> tuple[float, float]:
    """F1 axis limits showing every value and the target with a margin, inside [0, 1] and at least `span` wide, so a
    run that moves by a point does not fill the panel as if it had moved by fifty."""
    ys = [*values, *([target] if target is not None else [])]
    hi = min(1.0, max(ys) + margin / 2)
    lo = max(0.0, min(min(ys) - margin, hi - span))
    return lo, max(hi, min(1.0, lo + span))


def plot_training(runs: dict[str, dict], title: str, target: float | None = None):
    """Per run (name -> fit's {"steps", "history"}, optional "reference": (label, val F1)): training loss and lr per
    optimizer step, val macro-F1 at each epoch's last step (dotted: epoch ends; dashed: the run's reference)."""
    runs = {k: r for k, r in runs.items() if r.get("steps")}
    panels = 3 if any(r.get("history") for r in runs.values()) else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels + 2.5, 3.8), sharex=True, squeeze=False)
    axes, f1s = axes[0], []
    for name, run in runs.items():
        f1s += _draw_run(axes, name, run)
    axes[0].set(title="Training loss", xlabel="optimizer step", ylabel="training loss (the run's objective)")
    axes[1].set(title="Learning rate", xlabel="optimizer step", ylabel="learning rate (AdamW)")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if panels == 3:
        if target is not None:
            axes[2].axhline(target, color="red", ls=":", label=f"target {target:.2f}")
        axes[2].set(title="Validation macro-F1 (epoch ends)", xlabel="optimizer step", ylabel="validation macro-F1",
                    ylim=f1_limits(f1s, target))
    if runs:
        legend_outside(axes[-1])
    else:  # e.g. pruning with recovery_epochs = 0: say so rather than show empty axes
        axes[0].text(0.5, 0.5, "no training in this run", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _draw_run(axes, name: str, run: dict) -> list[float]:
    """One run's lines on plot_training's panels; its val F1 values (none without a history)."""
    steps = pd.DataFrame(run["steps"])
    line, = axes[0].plot(steps["step"], steps["loss"], lw=1.3, label=name)
    color = line.get_color()
    axes[1].plot(steps["step"], steps["lr"], lw=1.3, color=color, label=name)
    ends = steps.groupby("epoch")["step"].max()
    for ax in axes:
        for x in ends.iloc[:-1]:
            ax.axvline(x, color=color, alpha=0.3, lw=0.8, ls=":")
    if len(axes) < 3 or not run.get("history"):
        return []
    h = pd.DataFrame(run["history"])
    axes[2].plot(ends.reindex(h["epoch"]).to_numpy(), h["val_f1"], marker="o", color=color, label=name)
    if run.get("reference"):
        label, value = run["reference"]
        axes[2].axhline(value, color=color, ls="--", lw=1, label=f"{name}: {label} {value:.3f}")
        return [*h["val_f1"], value]
    return list(h["val_f1"])


def plot_confusions(results: dict, per_row: int | None = None):
    """Row-normalised confusion matrices (counts annotated, 10 pt), one panel per (title -> metrics), in a grid
    of `per_row` panels (2 for 2 or 4 panels, else 3), so the text stays legible however many models there are."""
    per_row = per_row or (2 if len(results) in (2, 4) else 3)
    rows = -(-len(results) // per_row)
    cols = min(per_row, len(results))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.9 * rows), squeeze=False)
    for ax, (title, m) in zip(axes.flat, results.items()):
        cm = confusion_matrix(m["labels"], m["preds"], labels=range(len(LABELS)))
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        annot = np.array([[f"{n}\n{p:.0%}" for n, p in zip(r, q)] for r, q in zip(cm, norm)])
        sns.heatmap(norm, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=LABELS, yticklabels=LABELS, annot_kws={"fontsize": 10})
        ax.set_title(f"{title} (F1 {m['macro_f1']:.3f})", fontsize=10)
        ax.set(xlabel="predicted", ylabel="true")
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_per_class_f1(results: dict):
    """Grouped bars of per-class F1 for each model/split, the legend beside the bars."""
    df = pd.DataFrame({name: m["per_class_f1"] for name, m in results.items()}).T[list(LABELS)]
    ax = df.plot.bar(rot=0, figsize=(max(7, 1.8 * len(df) + 2), 3.6), ylim=(0, 1.1))
    ax.set(title="Per-class F1", ylabel="F1")
    legend_outside(ax, title="class")
    for c in ax.containers:
        ax.bar_label(c, fmt="%.2f", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def metrics_table(results: dict) -> pd.DataFrame:
    rows = {name: {"macro-F1": m["macro_f1"], "accuracy": m["accuracy"],
                   **{f"F1 {k}": v for k, v in m["per_class_f1"].items()}} for name, m in results.items()}
    return pd.DataFrame(rows).T


def plot_sensitivity(tables: dict[str, pd.DataFrame], max_drop: float):
    """Per model, the val F1 delta (points) when one layer group alone is INT8 (a sensitivity table's "val Δ (pts)");
    red bars are the groups kept FP32, the dotted line the budget."""
    first = next(iter(tables.values()))
    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 0.3 * len(first) + 1.8), squeeze=False)
    for ax, (name, df) in zip(axes[0], tables.items()):
        ax.barh(df.index, df["val Δ (pts)"], color=["tab:red" if k else "tab:blue" for k in df["kept FP32"]])
        ax.axvline(-max_drop, color="grey", ls=":", label=f"budget: -{max_drop} pts")
        ax.axvline(0, color="black", lw=0.8)
        ax.invert_yaxis()
        ax.set(title=f"{name}: val ΔF1, one group INT8", xlabel="val ΔF1 vs FP32 (points, negative = worse)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_tradeoffs(df: pd.DataFrame, reference_rows: set):
    """Test macro-F1, size on disk and batch-1 latency per row of a variants table; reference rows grey."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.35 * len(df) + 1.8))
    for ax, col, title in zip(axes, ["test macro-F1", "disk (MB)", "latency (ms)"],
                              ["test macro-F1", "size on disk (MB)", "latency, batch 1, 32 tokens (ms)"]):
        ax.barh(df.index, df[col], color=["grey" if i in reference_rows else "tab:blue" for i in df.index])
        ax.bar_label(ax.containers[0], fmt="%.3g", fontsize=9)
        ax.invert_yaxis()
        ax.set_title(title)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    axes[0].set_xlim(max(0, df["test macro-F1"].min() - 0.1), 1)
    fig.tight_layout()
    return fig


SEED_SPLITS = {"val_macro_f1": "val", "test_macro_f1": "test", "ood_val_macro_f1": "OOD-val"}


def plot_seed_f1(runs: dict[str, list[dict]], title: str, lines: tuple = ()):
    """Macro-F1 per model and split: a bar at the mean over its training seeds, a dot per seed.
    runs: model -> per-seed records (lib.core.seeds); lines: (y, label, matplotlib style dict) drawn across."""
    splits = [k for k in SEED_SPLITS if all(r.get(k) is not None for rs in runs.values() for r in rs)]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width, values = 0.8 / len(splits), [y for y, _, _ in lines]
    for j, key in enumerate(splits):
        xs = np.arange(len(runs)) + (j - (len(splits) - 1) / 2) * width
        bars = ax.bar(xs, [np.mean([r[key] for r in rs]) for rs in runs.values()], width,
                      label=f"{SEED_SPLITS[key]} (mean over seeds)")
        ax.bar_label(bars, fmt="%.3f", fontsize=8 if len(runs) <= 5 else 6, label_type="center", color="white")
        for x, rs in zip(xs, runs.values()):
            ax.scatter([x] * len(rs), [r[key] for r in rs], color="black", s=10, zorder=3,
                       label="one seed" if j == 0 and x == xs[0] else None)
            values += [r[key] for r in rs]
    for y, label, style in lines:
        ax.axhline(y, label=label, **style)
    ax.set(xticks=range(len(runs)), xticklabels=list(runs), ylim=f1_limits(values), title=title, ylabel="macro-F1")
    if len(runs) > 5:  # narrower groups: smaller labels, still side by side
        plt.setp(ax.get_xticklabels(), fontsize=8)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def seed_table(runs: dict[str, list[dict]], exported: dict[str, int] | None = None) -> pd.DataFrame:
    """Per model: its seeds, the one exported (`exported`, else the median on val: seeds.median_run), and mean ± sd
    (min-max) of val, test and OOD-val macro-F1."""
    rows = {}
    for name, rs in runs.items():
        spreads = seeds.summary(rs)
        rows[name] = {"seeds": len(rs), "exported seed": (exported or {}).get(name, seeds.median_run(rs)["seed"]),
                      **{f"{label} macro-F1": seeds.spread_text(spreads[key]) for key, label in SEED_SPLITS.items()
                         if key in spreads}}
    return pd.DataFrame(rows).T
