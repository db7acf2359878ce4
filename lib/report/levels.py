"""Stage 04's pruning levels for readers: the table against the unpruned source, where the units were removed,
F1 and speed against sparsity, and the test predictions behind the confusion matrices. They read
lib.stages.pruning's result dicts."""
import statistics

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.core import stats
from lib.measure import ood_eval
from lib.report.plots import legend_outside


def plot_kept(results: dict):
    """Heatmaps of the share of heads and FFN neurons each layer keeps, per model and level."""
    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 5.5), squeeze=False)
    for col, (name, res) in enumerate(results.items()):
        base = res["base"]["counts"]
        for row, kind in enumerate(("heads", "neurons")):
            kept = np.array([lv["counts"][kind] for lv in res["levels"]], dtype=float)
            sns.heatmap(kept / np.array(base[kind]), annot=kept.astype(int), fmt="d", vmin=0, vmax=1, cmap="viridis",
                        ax=axes[row, col], yticklabels=[lv["name"] for lv in res["levels"]],
                        xticklabels=range(len(base[kind])), annot_kws={"fontsize": 9})
            axes[row, col].set(title=f"{name}: {kind} kept (of {base[kind][0]} per layer)", xlabel="layer",
                               ylabel="level (% removed)")
    fig.tight_layout()
    return fig


def plot_curve(results: dict, max_drop: float, min_speedup: float):
    """Val (solid, decides) and test (dashed) macro-F1, and batch-1 speed-up, against the share of prunable
    weights removed; the goals as dotted lines."""
    fig, (ax_f1, ax_sp) = plt.subplots(1, 2, figsize=(13, 3.9))
    for name, res in results.items():
        xs = [0.0] + [lv["sparsity"] for lv in res["levels"]]
        line, = ax_f1.plot(xs, [res["base"]["val"]["macro_f1"]] + [lv["val"]["macro_f1"] for lv in res["levels"]],
                           marker="o", label=f"{name} val")
        ax_f1.plot(xs, [res["base"]["test"]["macro_f1"]] + [lv["test"]["macro_f1"] for lv in res["levels"]],
                   marker="s", ls="--", color=line.get_color(), label=f"{name} test")
        ax_f1.axhline(res["base"]["val"]["macro_f1"] - max_drop / 100, ls=":", color=line.get_color(), lw=1.2,
                      label=f"{name} F1 goal (val - {max_drop} pts)")
        ax_sp.plot(xs, [1.0] + [lv["speedup"] for lv in res["levels"]], marker="o", label=name)
    ax_sp.axhline(min_speedup, ls=":", color="grey", label=f"speed goal {min_speedup}x")
    ax_f1.set(title="Macro-F1 vs sparsity", xlabel="share of prunable weights removed", ylabel="macro-F1")
    ax_sp.set(title="Batch-1 CPU speed-up vs sparsity", xlabel="share of prunable weights removed", ylabel="x faster")
    for ax in (ax_f1, ax_sp):
        legend_outside(ax)
    fig.tight_layout()
    return fig


def confusions(results: dict) -> dict:
    """Test predictions of each unpruned model and its levels, for a grid of confusion matrices."""
    out = {}
    for name, res in results.items():
        out[f"{name} unpruned"] = res["base"]["test"]
        out.update({f"{name} {lv['name']}%": lv["test"] for lv in res["levels"]})
    return out


def table(results: dict) -> pd.DataFrame:
    """Every model's unpruned source and levels: units kept, val and test F1 with the deltas, size, speed."""
    rows = {}
    for name, res in results.items():
        b = res["base"]
        for lv in [{"name": "0", **b, "speedup": 1.0, "sparsity": 0.0}] + res["levels"]:
            paired = (stats.delta_cell(lv["test_delta_pts"], lv["test_delta_ci_low"], lv["test_delta_ci_high"])
                      if "test_delta_pts" in lv else "")
            rows[f"{name} {lv['name']}%"] = {
                "heads": sum(lv["counts"]["heads"]), "FFN neurons": sum(lv["counts"]["neurons"]),
                "sparsity": lv["sparsity"], "val macro-F1": _val_mean(lv), "val Δ (pts)": f"{lv['val_delta_pts']:+.2f}" if lv["sparsity"] else "",
                **ood_eval.level_cells(lv, not lv["sparsity"]),
                "test macro-F1": lv["test"]["macro_f1"], "test Δ (pts) [95% CI]": paired,
                "params (M)": lv["params"] / 1e6, "disk (MB)": lv["disk_bytes"] / 1e6,
                "latency (ms)": lv["latency"]["median_ms"], "faster than unpruned (x)": lv["speedup"],
                "goals (val)": {True: "MET", False: "NOT MET"}.get(lv.get("goals_met"), "")}
    return pd.DataFrame(rows).T


def _val_mean(entry: dict) -> float:
    """A level's val macro-F1 as its seeds' mean (the unpruned source: its own)."""
    return statistics.fmean(r["val_macro_f1"] for r in entry["runs"]) if "runs" in entry else entry["val"]["macro_f1"]


def seed_runs(results: dict) -> dict[str, list[dict]]:
    """'<model> <level>%' -> that level's per-seed records."""
    return {f"{name} {lv['name']}%": lv["runs"] for name, res in results.items() for lv in res["levels"]}


def seeds_line(results: dict) -> str:
    """How many recovery seeds each level read, and which seed each exported."""
    first = next(iter(seed_runs(results).values()))
    n = len(first)
    if n == 1:
        return (f"* One training seed ({first[0]['seed']}): these figures carry no training "
                "variance; `run_all.py --seeds 3` prunes and recovers every level with three.")
    exported = ", ".join(f"{m} {lv['name']}% seed {lv['seed']}" for m, res in results.items() for lv in res["levels"])
    return (f"* Every level pruned and recovered with {n} seeds: val figures and the goals read their mean; test figures "
            f"and the paired intervals are the exported seed's, the median on val ({exported}).")
