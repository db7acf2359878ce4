"""What to ship: the deployment goals on validation, the recommended variant and why it (lib.ship.artifacts writes
it out).

The choice reads validation columns only (val_*, ood_val_*); test columns are reported, never used to choose.
"""
import pandas as pd

from lib.core import stats
from lib.core.goals import Goal
from lib.ship.seed_mean import SEED_COLUMNS
from lib.ship.pareto import pareto_front

# stage 05's table names the cost ratios after their reference; the goals read those columns
COLUMNS = {"speedup": "speedup_vs_teacher", "size_ratio": "size_ratio_vs_teacher"}
LATENCY_TIE = 0.1  # variants within 10% (about the run-to-run spread of the timings) of the fastest count as tied
# the batch flips (lib.measure.invariance) the choice reads: validation sets only; test flips are reported, never read
DECISION_FLIP_SETS = ("val", "ood_val")


def reference_rows(df: pd.DataFrame) -> pd.Series:
    """True for the off-the-shelf reference rows (Variant.reference, lib.measure.reference): measured like every
    variant, never recommended."""
    if "reference" not in df:
        return pd.Series(False, index=df.index)
    return df["reference"].astype(str).str.lower().eq("true")  # a bool column, or its words read back from a CSV


def best_references(refs: pd.DataFrame) -> dict:
    """The reference rows the goals compare with, all end to end in this run: the fastest at batch 1 and the one
    with the highest batch-32 throughput (each the hardest bar at its batch size)."""
    return {"batch1": refs.loc[refs["e2e_latency_median_ms"].idxmin()],
            "batch32": refs.loc[refs["e2e_throughput_b32_per_s"].idxmax()]}


def with_reference_ratios(df: pd.DataFrame, refs: pd.DataFrame) -> pd.DataFrame:
    """speedup_vs_reference (the fastest reference row's e2e batch-1 ms over each row's) and throughput_vs_reference
    (each row's e2e batch-32 sentences/s over the best reference row's); absent, so the goals read n/a, without
    reference rows."""
    if len(refs):
        best = best_references(refs)
        df["speedup_vs_reference"] = best["batch1"]["e2e_latency_median_ms"] / df["e2e_latency_median_ms"]
        df["throughput_vs_reference"] = df["e2e_throughput_b32_per_s"] / best["batch32"]["e2e_throughput_b32_per_s"]
    return df


def goal_checks(df: pd.DataFrame, goals: list[Goal]) -> dict:
    """Each deployment goal, in words -> whether each variant meets it (a boolean Series)."""
    return {g.text: g.met(df[g.metric]) for g in goals}


def meets_goals(df: pd.DataFrame, goals: list[Goal]) -> pd.Series:
    """True for variants that meet every goal at once."""
    return pd.concat(goal_checks(df, goals).values(), axis=1).all(axis=1)


def budget(goals: list[Goal]) -> Goal:
    """The F1 budget: the one goal a shipped model may never miss."""
    return next(g for g in goals if g.name == "max_f1_drop_pts")


def flip_sets(df) -> list[str]:
    """The sets a table (or one row) has batch flips for, in its column order."""
    columns = df.index if isinstance(df, pd.Series) else df.columns
    return [c.removesuffix("_batch_flips") for c in columns if c.endswith("_batch_flips")]


def decision_flips(df: pd.DataFrame, uncounted: float = 0) -> pd.Series:
    """Per variant, its batch flips on the validation sets the choice reads, summed (0 where none were measured);
    `uncounted` for a variant whose flips were not counted (outside the F1 budget: harness.run_benchmark)."""
    columns = [f"{s}_batch_flips" for s in DECISION_FLIP_SETS if s in flip_sets(df)]
    if not columns:
        return pd.Series(0, index=df.index)
    return df[columns].sum(axis=1).where(df[columns].notna().all(axis=1), uncounted)


def flip_cell(counts) -> str:
    """A row's batch flips per set as one cell, '-' for a set whose flips were not counted."""
    return " / ".join("-" if pd.isna(x) else f"{x:.0f}" for x in counts)


def flips_of(row: pd.Series) -> int:
    return int(decision_flips(row.to_frame().T).iloc[0])


def recommend(df: pd.DataFrame, goals: list[Goal], latency_tie: float = LATENCY_TIE) -> pd.Series:
    """Fastest variant that meets every deployment goal on validation; if none does, the fastest within the
    F1 budget; both among the variants with zero batch flips on val and ood_val (with none, the fewest). Variants
    within latency_tie of the fastest count as tied, and the smallest wins."""
    df = df[~reference_rows(df)]  # a reference row is reported beside the candidates, never shipped
    ok = df[budget(goals).met(df[budget(goals).metric])]
    flips = decision_flips(ok, uncounted=float("inf"))  # an uncounted variant is never taken for a steady one
    steady = ok[flips == flips.min()]  # zero flips where any variant within the budget has none, else the fewest
    meets = steady[meets_goals(steady, goals)]
    pool = meets if len(meets) else steady
    tied = pool[pool["latency_median_ms"] <= pool["latency_median_ms"].min() * (1 + latency_tie)]
    return tied.sort_values(["disk_bytes", "latency_median_ms"]).iloc[0]


def why_here(rec: pd.Series, df: pd.DataFrame, goals: list[Goal], latency_tie: float = LATENCY_TIE, show: int = 4) -> str:
    """One sentence on why the recommendation sits where it does: what rules out each faster variant."""
    df = df[~reference_rows(df)]
    faster = df[df["latency_median_ms"] < rec["latency_median_ms"]].sort_values("latency_median_ms", ascending=False)
    if faster.empty:
        return f"`{rec['name']}` is the fastest variant measured."
    # the goals that decided: all of them, or only the F1 budget when no variant met every goal
    deciding = goals if meets_goals(rec.to_frame().T, goals).iloc[0] else [budget(goals)]
    tied, ruled_out = [], []  # tied: every rule met but size, the closest contenders, named first
    for _, r in faster.iterrows():
        missed = [g.short + seed_words(r, g) for g in deciding if not g.met(r[g.metric])]
        why = [f"misses {', '.join(missed)}"] * bool(missed) + [flip_reason(r)] * (flips_of(r) > flips_of(rec))
        head = f"`{r['name']}` ({r['latency_median_ms']:.2f} ms) "
        if why:
            ruled_out.append(head + " and ".join(why))
        else:
            tied.append(head + f"is within {latency_tie:.0%} of its latency but larger ({r['disk_bytes'] / 1e6:.1f} MB)")
    reasons = (tied + ruled_out)[:show]
    ruled = "miss a goal or flip labels" if flip_sets(df) else "miss a goal"
    if len(tied) > show:
        ruled += f" or are within {latency_tie:.0%} of its latency but larger"
    more = f"; {len(faster) - show} more faster variants {ruled} too" if len(faster) > show else ""
    return (f"Why here: {len(faster)} variant(s) are faster than `{rec['name']}` ({rec['latency_median_ms']:.2f} ms), "
            f"and none of them qualifies: {'; '.join(reasons)}{more}.")


def seed_words(row: pd.Series, g: Goal) -> str:
    """' (the mean of its 3 seeds)' where the goal read a seed mean (lib.ship.seed_mean), else nothing."""
    n = row.get("seeds_read", 1)
    return f" (the mean of its {n:.0f} seeds)" if n > 1 and g.metric in SEED_COLUMNS.values() else ""


def quality_table(df: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """Per variant and set: macro-F1 with its 95% CI and the paired delta to the teacher with its CI; for the
    last set (test) also its Holm-adjusted bootstrap p (the header names the family; the raw p is in the JSON),
    and the word (McNemar p stays in the JSON and on the index: at 1366 px the page's table has no room for it);
    then the batch flips of each set measured. '#' numbers the points of the Pareto plot."""
    out = pd.DataFrame({"#": range(len(df)), "variant": df["name"]}, index=df.index)
    for s in sets:
        out[f"{s} macro-F1 (95% CI)"] = [f"{f:.3f} ({lo:.3f}-{hi:.3f})" for f, lo, hi in
                                         zip(df[f"{s}_macro_f1"], df[f"{s}_f1_ci_low"], df[f"{s}_f1_ci_high"])]
        out[f"{s} Δ vs teacher, pts [95% CI]"] = [stats.delta_cell(*x) for x in
                                                  zip(df[f"{s}_delta_pts"], df[f"{s}_delta_ci_low"], df[f"{s}_delta_ci_high"])]
    last = sets[-1]
    out[f"{last} p, Holm over {stats.family_size(df[f'{last}_p_holm'])} vs teacher"] = df[f"{last}_p_holm"]
    out[f"on {last} (Holm p < {stats.ALPHA})"] = df[f"{last}_reading"]
    if flips := flip_sets(df):  # labels that differ between batch 1 and shuffled batches of 32
        out[f"batch flips ({' / '.join(flips)}; - outside the F1 budget, not counted)"] = [
            flip_cell(r) for r in df[[f"{s}_batch_flips" for s in flips]].to_numpy()]
    return out


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant: format, batch-1 latency, speed-up, throughput, size, memory, load time."""
    out = pd.DataFrame({"#": range(len(df)), "variant": df["name"], "format": df["format"] + " " + df["precision"],
                        "latency median (ms)": df["latency_median_ms"], "p95 (ms)": df["latency_p95_ms"],
                        "faster than teacher (x)": df["speedup_vs_teacher"], "sentences/s (batch 32)": df["throughput_b32_per_s"],
                        "disk (MB)": df["disk_bytes"] / 1e6, "smaller than teacher (x)": df["size_ratio_vs_teacher"],
                        "peak RSS (MB)": df["peak_rss_mb"], "load (s)": df["load_s"]}, index=df.index)
    if "gpu_throughput_b32_per_s" in df:
        out["GPU sentences/s"] = df["gpu_throughput_b32_per_s"]
    return out


def lineage(df: pd.DataFrame, name: str) -> list[str]:
    """pretrained model -> teacher -> student -> pruned -> INT8: the chain of sources of a variant."""
    sources = dict(zip(df["name"], df["source"]))
    chain = [name]
    while isinstance(sources.get(chain[-1]), str) and sources[chain[-1]] not in chain:  # a missing source reads NaN
        chain.append(sources[chain[-1]])
    return chain[::-1]


def flip_reason(row: pd.Series) -> str:
    """Why a variant with batch flips on the decision sets is passed over."""
    where = ", ".join(f"{row[f'{s}_batch_flips']:.0f} on {s}" for s in DECISION_FLIP_SETS if s in flip_sets(row))
    return f"flips labels with its batch-mates ({where})"


def flip_clause(row: pd.Series) -> str:
    """recommend's batch-flip rule as it applied to this variant; empty where no flips were measured."""
    where = " and ".join(s for s in DECISION_FLIP_SETS if s in flip_sets(row))
    if not where:
        return ""
    if flips_of(row) == 0:
        return f"keeps its labels whatever its batch-mates (zero batch flips on {where})"
    return (f"flips the fewest labels with its batch-mates ({flips_of(row)} on {where}; no variant within the F1 "
            "budget flips none)")


def choice_rule(row: pd.Series, goals: list[Goal]) -> str:
    """Why this variant was chosen, in words (which of recommend's rules applied)."""
    clause = flip_clause(row)
    if meets_goals(row.to_frame().T, goals).iloc[0]:
        return f"the fastest variant that meets every goal{' and ' * bool(clause)}{clause}: " + "; ".join(g.text for g in goals)
    return (f"the fastest variant with {budget(goals).text}{' that ' * bool(clause)}{clause} (none "
            f"{'of those ' * bool(clause)}met every goal)")


def flip_line(row: pd.Series) -> str:
    """The verdict's line on the variant's batch flips per set: the sets the choice reads, then the reported ones."""
    sets = flip_sets(row)
    if not sets:
        return "* Batch flips: not measured (`batch_flip_sets` is empty), so batch-mates were not ruled out."
    counts = {s: f"{row[f'{s}_batch_flips']:.0f} of {row[f'{s}_batch_n']:.0f} on {s}" for s in sets}
    read = [counts[s] for s in sets if s in DECISION_FLIP_SETS]
    reported = [counts[s] for s in sets if s not in DECISION_FLIP_SETS]
    return ("* Batch flips (its label for a sentence alone against its label in a shuffled batch of 32): "
            + "; ".join(filter(None, [", ".join(read) + " (the choice reads these)" * bool(read),
                                      ", ".join(reported) + " (reported only)" * bool(reported)])) + ".")


def recommendation_text(row: pd.Series, df: pd.DataFrame, goals: list[Goal], sets: list[str], seeds: str = "",
                        checks: list[dict] | None = None) -> str:
    """The plain-language verdict: what to ship (chosen on val), its test figures with the paired delta to the
    teacher, what it costs, why it and not a faster variant, each goal (`checks`, else checked here), and how many
    variants are within noise; `seeds`: a line on the training seeds its goals read."""
    test = sets[-1]
    checks = checks or [g.check(row[g.metric], row["name"]) for g in goals]
    return "\n".join([
        f"**Ship `{row['name']}`**: {choice_rule(row, goals)}.", "",
        f"* Lineage: {' -> '.join(lineage(df, row['name']))}.",
        f"* Chosen on validation: macro-F1 {row['val_macro_f1']:.3f}, {row['val_delta_pts']:+.2f} points vs the teacher"
        f"{' (the exported model)' * bool(seeds)}.", *[seeds] * bool(seeds),
        f"* On {test}, reported only: macro-F1 {row[f'{test}_macro_f1']:.3f} (95% CI {row[f'{test}_f1_ci_low']:.3f}-"
        f"{row[f'{test}_f1_ci_high']:.3f}), {stats.delta_text(row, prefix=f'{test}_')}.",
        f"* Cost: {row['latency_median_ms']:.2f} ms median batch-1 latency ({row['speedup_vs_teacher']:.1f}x faster), "
        f"{row['disk_bytes'] / 1e6:.1f} MB on disk ({row['size_ratio_vs_teacher']:.1f}x smaller).",
        flip_line(row), f"* {why_here(row, df, goals)}", "", "Goals, judged on validation:", "",
        *[f"* **{'MET' if c['met'] else 'NOT MET'}**: {c['text']} (it reads {c['reads']})" for c in checks], "",
        stats.noise_summary(df[f"{test}_reading"][1:], test), "",
        f"Pareto-optimal on validation F1 vs latency: {', '.join(df[pareto_front(df, 'latency_median_ms')]['name'])}."])


INDEX_COLUMNS = ["name", "val_macro_f1", "test_macro_f1", "test_delta_pts", "test_delta_ci_low", "test_delta_ci_high",
                 "test_p", "test_p_holm", "test_reading", "test_mcnemar_p", "latency_median_ms", "speedup_vs_teacher", "disk_bytes", "size_ratio_vs_teacher"]
OOD_INDEX_COLUMNS = ["ood_val_macro_f1", "ood_val_retention", "ood_test_macro_f1", "ood_test_retention",
                     "ood_test_delta_pts", "ood_test_delta_ci_low", "ood_test_delta_ci_high", "ood_test_p",
                     "ood_test_p_holm", "ood_test_reading"]  # when the tweets are there


def index_table(df: pd.DataFrame) -> list[dict]:
    """The headline columns that reports/index.html shows (it names and formats them)."""
    return df[[c for c in INDEX_COLUMNS + OOD_INDEX_COLUMNS if c in df]].to_dict("records")


def ood_table(df: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """Out of domain beside in domain: per OOD set macro-F1 (CI), paired delta to the teacher [CI], retention next
    to the in-domain retention it pairs with (ood_val ~ val, ood_test ~ test); per-class F1 is in the stage JSON."""
    out = pd.DataFrame({"#": range(len(df)), "variant": df["name"]}, index=df.index)
    for s in sets:
        ind = s.removeprefix("ood_")
        out[f"{ind} retention"] = df[f"{ind}_retention"]
        out[f"{s} macro-F1 (95% CI)"] = [f"{f:.3f} ({lo:.3f}-{hi:.3f})" for f, lo, hi in
                                         zip(df[f"{s}_macro_f1"], df[f"{s}_f1_ci_low"], df[f"{s}_f1_ci_high"])]
        out[f"{s} Δ, pts [95% CI]"] = [stats.delta_cell(*x) for x in
                                       zip(df[f"{s}_delta_pts"], df[f"{s}_delta_ci_low"], df[f"{s}_delta_ci_high"])]
        out[f"{s} retention"] = df[f"{s}_retention"]
    return out


def ood_text(row: pd.Series, df: pd.DataFrame, test: str = "ood_test") -> str:
    """The out-of-domain reading, from the measured numbers: how low every model is, and what the pick keeps."""
    if f"{test}_macro_f1" not in df:
        return ""
    t, f1 = df.iloc[0], df[f"{test}_macro_f1"]
    low = (f1 < df["test_macro_f1"]).all()
    reading = ("every model scores lower there than in domain: tweets differ in style and label convention, so the low "
               "absolute level is the data's limit, not a compression effect" if low else
               "not every model scores lower there than in domain")
    return (f"Out of domain (financial tweets; {test} reported only): macro-F1 {f1.min():.3f}-"
            f"{f1.max():.3f} there against {df['test_macro_f1'].min():.3f}-{df['test_macro_f1'].max():.3f} in domain "
            f"(teacher {t[f'{test}_macro_f1']:.3f} vs {t['test_macro_f1']:.3f}); {reading}. What compression "
            f"costs there: `{row['name']}` keeps {row[f'{test}_retention']:.1%} of the teacher's {test} macro-F1 "
            f"against {row['test_retention']:.1%} in domain (a gap of "
            f"{100 * (row['test_retention'] - row[f'{test}_retention']):.1f} points), {stats.delta_text(row, prefix=f'{test}_')}.")
