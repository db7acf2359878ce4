"""Stage 05's pictures of the trade-off: Pareto frontiers, the deployment goals as lines, numbered points."""
import numpy as np
import pandas as pd

from lib.core.variants import LABELS

# label offsets (points) tried in turn around a marker until one does not overlap a label already placed
OFFSETS = [(5, 4), (5, -12), (-16, 4), (-16, -12), (5, 14), (-16, 14), (5, -22), (-16, -22), (14, -4), (-26, -4),
           (5, 24), (-16, 24), (5, -32), (-16, -32), (24, 4), (-36, 4)]


def pareto_front(df: pd.DataFrame, cost: str, quality: str = "val_macro_f1") -> pd.Series:
    """True for variants no other variant beats on both cost (lower) and quality (higher)."""
    c, q = df[cost].to_numpy(), df[quality].to_numpy()
    dominated = [((c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))).any() for i in range(len(df))]
    return pd.Series(~np.array(dominated), index=df.index)


def place_labels(ax, xs, ys, texts, fontsize: float = 9) -> list:
    """Annotate each point with its text at the first offset whose box overlaps no label placed before it;
    returns the boxes (display pixels) so a test can check they are disjoint."""
    fig = ax.figure
    fig.canvas.draw()
    renderer, placed = fig.canvas.get_renderer(), []
    for x, y, text in sorted(zip(xs, ys, texts), key=lambda t: (-t[1], t[0])):
        for dx, dy in OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                              color="#222")
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(b) for b in placed) or (dx, dy) == OFFSETS[-1]:
                placed.append(box)
                break
            ann.remove()
    return placed


def _goal_lines(ax, cost: str, teacher: pd.Series, goals: dict):
    """The F1 budget (horizontal) and, on its own axis, the speed or size goal (vertical)."""
    floor = teacher["val_macro_f1"] - goals["max_f1_drop_pts"] / 100
    ax.axhline(floor, color="tab:red", ls=":", lw=1.4, label=f"F1 budget: teacher val - {goals['max_f1_drop_pts']} pts")
    if cost == "latency_median_ms" and goals.get("min_speedup"):
        ax.axvline(teacher[cost] / goals["min_speedup"], color="tab:purple", ls="--", lw=1.2,
                   label=f"speed goal: {goals['min_speedup']}x faster (left of line)")
    if cost == "disk_mb" and goals.get("min_size_ratio"):
        ax.axvline(teacher[cost] / goals["min_size_ratio"], color="tab:brown", ls="--", lw=1.2,
                   label=f"size goal: {goals['min_size_ratio']}x smaller (left of line)")


def plot_tradeoffs(df: pd.DataFrame, recommended: str, goals: dict):
    """Validation macro-F1 (what decides) vs batch-1 latency and vs MB on disk; points numbered as the tables
    (#), Pareto frontier dashed, goals as lines, the recommendation circled. goals: the stage's parameters."""
    import matplotlib.pyplot as plt
    df = df.assign(disk_mb=df["disk_bytes"] / 1e6, number=[str(i) for i in range(len(df))])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.6))
    colors = dict(zip(df["stage"].unique(), plt.cm.tab10.colors))
    for ax, cost, label in [(axes[0], "latency_median_ms", "batch-1 median latency (ms, log scale)"),
                            (axes[1], "disk_mb", "size on disk (MB, log scale)")]:
        for stage, g in df.groupby("stage", sort=False):
            ax.scatter(g[cost], g["val_macro_f1"], label=stage, s=36, color=colors[stage], zorder=3)
        front = df[pareto_front(df, cost)].sort_values(cost)
        ax.plot(front[cost], front["val_macro_f1"], "k--", lw=1, label="Pareto frontier")
        rec = df[df["name"] == recommended]
        ax.scatter(rec[cost], rec["val_macro_f1"], s=260, facecolors="none", edgecolors="red", lw=2,
                   label="recommended", zorder=4)
        _goal_lines(ax, cost, df.iloc[0], goals)
        ax.set(xscale="log", xlabel=label, ylabel="validation macro-F1", title=f"Validation macro-F1 vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    extra = [(h, n) for h, n in zip(*axes[0].get_legend_handles_labels()) if n not in names]
    fig.legend(handles + [h for h, _ in extra], names + [n for _, n in extra], loc="lower center", ncol=4,
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    for ax, cost in zip(axes, ["latency_median_ms", "disk_mb"]):  # after the layout: offsets are in final pixels
        place_labels(ax, df[cost], df["val_macro_f1"], df["number"])
    return fig


def plot_retention(df: pd.DataFrame, split: str = "test"):
    """Per-class F1 of each variant as a share of the teacher's: where compression hurts first."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    cols = [f"{split}_f1_{label}" for label in LABELS]
    ret = df.set_index("name")[cols] / df.iloc[0][cols].astype(float).values
    fig, ax = plt.subplots(figsize=(7, 0.34 * len(ret) + 1.4))
    sns.heatmap(ret.rename(columns=lambda c: c.rsplit("_", 1)[1]), annot=True, fmt=".3f", cmap="RdYlGn", vmin=0.9,
                vmax=1.02, cbar=False, ax=ax, annot_kws={"fontsize": 9})
    ax.set(title=f"Per-class {split} F1 retained vs the teacher (1.000 = as good)", ylabel="")
    fig.tight_layout()
    return fig
