"""What to ship: Pareto frontiers, the deployment goals, the recommended variant (lib/export.py writes it out)."""
import numpy as np
import pandas as pd

from lib.data import LABELS
from lib.goals import Goal


def pareto_front(df: pd.DataFrame, cost: str, quality: str = "macro_f1") -> pd.Series:
    """True for variants no other variant beats on both cost (lower) and quality (higher)."""
    c, q = df[cost].to_numpy(), df[quality].to_numpy()
    dominated = [((c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))).any() for i in range(len(df))]
    return pd.Series(~np.array(dominated), index=df.index)


def goal_checks(df: pd.DataFrame, goals: list[Goal]) -> dict:
    """Each deployment goal, in words -> whether each variant meets it (a boolean Series)."""
    return {g.text: g.met(df[g.metric]) for g in goals}


def meets_goals(df: pd.DataFrame, goals: list[Goal]) -> pd.Series:
    """True for variants that meet every goal at once."""
    return pd.concat(goal_checks(df, goals).values(), axis=1).all(axis=1)


def budget(goals: list[Goal]) -> Goal:
    """The F1 budget: the one goal a shipped model may never miss."""
    return next(g for g in goals if g.name == "max_f1_drop_pts")


def recommend(df: pd.DataFrame, goals: list[Goal], latency_tie: float = 0.1) -> pd.Series:
    """Fastest variant that meets every deployment goal; if none does, the fastest within the F1 budget.
    Variants within latency_tie (10%, about the run-to-run spread of the timings) of the fastest count as
    tied, and the smallest wins."""
    ok = df[budget(goals).met(df[budget(goals).metric])]
    meets = ok[meets_goals(ok, goals)]
    pool = meets if len(meets) else ok
    tied = pool[pool["latency_median_ms"] <= pool["latency_median_ms"].min() * (1 + latency_tie)]
    return tied.sort_values(["disk_bytes", "latency_median_ms"]).iloc[0]


def plot_tradeoffs(df: pd.DataFrame, recommended: str):
    """F1 vs batch-1 latency and vs size on disk, Pareto frontier joined, the recommendation circled."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, cost, label in [(axes[0], "latency_median_ms", "batch-1 median latency (ms)"),
                            (axes[1], "disk_bytes", "size on disk (bytes)")]:
        front = df[pareto_front(df, cost)].sort_values(cost)
        for stage, g in df.groupby("stage"):
            ax.scatter(g[cost], g["macro_f1"], label=stage, s=40)
        ax.plot(front[cost], front["macro_f1"], "k--", lw=1, label="Pareto frontier")
        rec = df[df["name"] == recommended]
        ax.scatter(rec[cost], rec["macro_f1"], s=220, facecolors="none", edgecolors="red", lw=2, label="recommended")
        for _, r in df.iterrows():
            ax.annotate(r["name"], (r[cost], r["macro_f1"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel=label, ylabel="test macro-F1", title=f"Macro-F1 vs {label.split(' (')[0]}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_retention(df: pd.DataFrame):
    """Per-class F1 of each variant as a share of the teacher's: where compression hurts first."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    cols = [f"f1_{l}" for l in LABELS]
    ret = df.set_index("name")[cols] / df.iloc[0][cols].astype(float).values
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(ret) + 1.2))
    sns.heatmap(ret.rename(columns=lambda c: c[3:]), annot=True, fmt=".3f", cmap="RdYlGn", vmin=0.9, vmax=1.02,
                cbar=False, ax=ax)
    ax.set(title="Per-class F1 retained vs teacher", ylabel="")
    fig.tight_layout()
    return fig


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    t = df[["name", "format", "macro_f1", "f1_ci_low", "f1_ci_high", "f1_drop_pts", "teacher_agreement", "ece",
            "latency_median_ms", "latency_p95_ms", "latency_p99_ms", "speedup", "throughput_b32_per_s",
            "disk_bytes", "size_ratio", "peak_rss_mb", "load_s"]
           + [c for c in ["gpu_throughput_b32_per_s"] if c in df]].copy()
    t["disk_MB"] = t.pop("disk_bytes") / 1e6
    return t.set_index("name").round(3)


def lineage(df: pd.DataFrame, name: str) -> list[str]:
    """pretrained model -> teacher -> student -> pruned -> INT8: the chain of sources of a variant."""
    sources = dict(zip(df["name"], df["source"]))
    chain = [name]
    while isinstance(sources.get(chain[-1]), str) and sources[chain[-1]] not in chain:  # a missing source reads NaN
        chain.append(sources[chain[-1]])
    return chain[::-1]


def choice_rule(row: pd.Series, goals: list[Goal]) -> str:
    """Why this variant was chosen, in words (which of recommend's two rules applied)."""
    if meets_goals(row.to_frame().T, goals).iloc[0]:
        return "the fastest variant that meets every goal: " + "; ".join(g.text for g in goals)
    return f"the fastest variant with {budget(goals).text} (none met every goal)"


def recommendation_text(row: pd.Series, df: pd.DataFrame, goals: list[Goal]) -> str:
    """The plain-language verdict: what to ship, what it costs, and whether the deployment goals were met."""
    met = {goal: bool(ok.iloc[0]) for goal, ok in goal_checks(row.to_frame().T, goals).items()}
    lines = [f"**Ship `{row['name']}`**, {choice_rule(row, goals)} "
             f"({' -> '.join(lineage(df, row['name']))}): test macro-F1 {row['macro_f1']:.4f} "
             f"(95% CI {row['f1_ci_low']:.4f}-{row['f1_ci_high']:.4f}, {-row['f1_drop_pts']:+.2f} points vs teacher), "
             f"{row['latency_median_ms']:.2f} ms median batch-1 latency ({row['speedup']:.1f}x faster), "
             f"{row['disk_bytes'] / 1e6:.1f} MB on disk ({row['size_ratio']:.1f}x smaller).", ""]
    lines += [f"* {'MET' if ok else 'NOT MET'}: {goal}" for goal, ok in met.items()]
    front = df[pareto_front(df, "latency_median_ms")]["name"].tolist()
    lines += ["", f"Pareto-optimal on F1 vs latency: {', '.join(front)}."]
    return "\n".join(lines)


def index_table(df: pd.DataFrame) -> list[dict]:
    """The headline columns that reports/index.html shows."""
    cols = ["name", "macro_f1", "f1_drop_pts", "latency_median_ms", "speedup", "disk_bytes", "size_ratio"]
    return df[cols].round(4).to_dict("records")
