"""The ship rule on the seed mean: a candidate made from a model trained with several seeds is read on the mean of
its recipe's models over those seeds (lib.core.seeds.twins), scored on validation only. Stage 05 reads the F1 goals
from the columns SEED_COLUMNS names; a variant with one model (the teacher's lineage, PTQ of the exported student)
reads its own figures there."""
import statistics

import pandas as pd

SETS = ("val", "ood_val")  # what the F1 goals read; test is never scored for a seed's twin
# the F1 goals' metrics -> the seed-mean columns stage 05 judges them on (the exported seed's stay as they are)
SEED_COLUMNS = {"val_delta_pts": "seed_val_delta_pts", "ood_val_retention": "seed_ood_val_retention"}


def record(seed: int, f1: dict, exported: bool) -> dict:
    """One seed's model of a recipe: its seed, macro-F1 per validation set, whether it is the model the table shows."""
    return {"seed": seed, **{f"{s}_macro_f1": f1[s] for s in SETS if s in f1}, "exported": exported}


def per_seed(runs: list[dict], teacher: pd.Series) -> dict[str, list[float]]:
    """Seed-mean column -> each seed's figure (val delta in points; OOD-val retention where the sets have it)."""
    out = {"seed_val_delta_pts": [100 * (r["val_macro_f1"] - teacher["val_macro_f1"]) for r in runs]}
    if "ood_val_macro_f1" in teacher and all("ood_val_macro_f1" in r for r in runs):
        out["seed_ood_val_retention"] = [r["ood_val_macro_f1"] / teacher["ood_val_macro_f1"] for r in runs]
    return out


def with_seed_means(df: pd.DataFrame, runs: dict[str, list[dict]]) -> pd.DataFrame:
    """seeds_read and the SEED_COLUMNS: the mean over `runs` (name -> its seeds' records) where a variant has them,
    else its own figure with seeds_read 1. The teacher is row 0."""
    df = df.copy()
    df["seeds_read"] = 1
    for metric, column in SEED_COLUMNS.items():
        if metric in df:
            df[column] = df[metric].astype(float)
    for name, rs in runs.items():
        i = df.index[df["name"] == name][0]
        df.loc[i, "seeds_read"] = len(rs)
        for column, values in per_seed(rs, df.iloc[0]).items():
            df.loc[i, column] = statistics.fmean(values)
    return df


def seeds_line(row: pd.Series, runs: dict[str, list[dict]], teacher: pd.Series) -> str:
    """The verdict's line on which seeds the F1 goals read for the shipped variant, and which one it exports."""
    rs = runs.get(row["name"])
    if not rs:
        return ("* Seeds: one model of this recipe, so its goals read that model alone (the teacher is trained with "
                "one seed; post-training quantization is made from the exported model only).")
    deltas = per_seed(rs, teacher)["seed_val_delta_pts"]
    shown = " / ".join(f"{d:+.2f} (seed {r['seed']}{', exported' * r['exported']})" for d, r in zip(deltas, rs))
    return (f"* Seeds: the F1 goals read the mean over the {len(rs)} training seeds this recipe was built from, "
            f"val Δ {statistics.fmean(deltas):+.2f} points ({shown}). The exported model comes from the median seed on "
            "val of the last trained step of its lineage; the other seeds' models are scored on validation only.")


def read_text(runs: dict[str, list[dict]]) -> str:
    """One line on how many variants were read on their seeds, and why only those."""
    if not runs:
        return ""
    return (f"{len(runs)} variants were read on the mean of their {max(map(len, runs.values()))} training seeds (the "
            "report's seeds table): those within the F1 budget plus 0.5 points on their exported "
            "model, the only ones the ship rule can read. Their batch flips are the exported model's.")


def table(df: pd.DataFrame, runs: dict[str, list[dict]]) -> pd.DataFrame:
    """The variants read on seeds, numbered as the quality table: each seed's val Δ (the exported first) and OOD-val
    retention, and the means the F1 goals read."""
    rows = []
    for name, rs in runs.items():
        i = df.index[df["name"] == name][0]
        figures = per_seed(rs, df.iloc[0])
        rows.append({"#": i, "variant": name, "seeds (exported first)": " / ".join(str(r["seed"]) for r in rs),
                     "val Δ per seed, pts": " / ".join(f"{d:+.2f}" for d in figures["seed_val_delta_pts"]),
                     "val Δ, seed mean": df.loc[i, "seed_val_delta_pts"],
                     **({"ood_val kept per seed": " / ".join(f"{x:.3f}" for x in figures["seed_ood_val_retention"]),
                         "ood_val kept, seed mean": df.loc[i, "seed_ood_val_retention"]}
                        if "seed_ood_val_retention" in figures else {})})
    return pd.DataFrame(rows, index=[r["#"] for r in rows])  # indexed as the quality table: the pick is highlighted
