"""Plots and tables every stage draws: class distributions, learning curves, confusion matrices, per-class F1."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix

from lib.data import LABELS


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
