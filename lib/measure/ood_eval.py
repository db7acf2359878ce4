"""OOD-val beside val where a stage compares variants: one more loader scored by the stage's own code, and the
paired delta to the reference. Reported only: every choice stays on in-domain val; OOD-test is not read here."""
from pathlib import Path

import pandas as pd

from lib.core import stats
from lib.data.batching import make_loader
from lib.data.ood import load_ood_sets
from lib.modeling.train import evaluate, load_classifier, public
from lib.techniques import prune


def ood_val_frame(data_dir) -> pd.DataFrame | None:
    """Stage 01's OOD-val set, or None when it wrote no OOD sets (the stage then reports val only)."""
    return load_ood_sets(data_dir).get("ood_val")


def ood_val_loader(data_dir, tokenizer, batch_size: int, max_length: int):
    """An unshuffled loader over OOD-val with the stage's tokenizer, or None without OOD sets."""
    df = ood_val_frame(data_dir)
    return None if df is None else make_loader(df, tokenizer, batch_size, max_length)


def ood_fields(result: dict | None, ref: dict | None, seed: int) -> dict:
    """ood_val_macro_f1 and the paired delta to the reference in points; {} without an OOD-val result."""
    if result is None or ref is None:
        return {}
    d = stats.compare(result["labels"], result["preds"], ref["preds"], seed=seed)
    return {"ood_val_macro_f1": float(result["macro_f1"]), "ood_val_delta_pts": float(d["delta_pts"])}


def readable_columns(table: pd.DataFrame) -> dict:
    """The human OOD-val columns of a comparison table; {} when it has none."""
    if "ood_val_macro_f1" not in table:
        return {}
    return {"OOD-val macro-F1": table["ood_val_macro_f1"],
            "OOD-val Δ (pts)": table["ood_val_delta_pts"].map(lambda v: "" if pd.isna(v) else f"{v:+.2f}")}


def score_pruned(results: dict, data_dir, max_length: int, device, seed: int, root=".") -> None:
    """Stage 04: each source and level reloaded from disk and scored on OOD-val after all training (so no loader
    draw shifts a training run's RNG); adds ood_val, ood_val_macro_f1 and the paired delta to the source, and
    each level's other training seeds' OOD-val macro-F1 to their records (reported, never chosen on)."""
    df = ood_val_frame(data_dir)
    if df is None:
        return
    for res in results.values():
        _, tok = load_classifier(str(res["base"]["path"]))
        loader = make_loader(df, tok, 64, max_length)
        entries = [(res["base"], lambda p: load_classifier(str(p))[0])]
        entries += [(lv, prune.load_pruned) for lv in res["levels"]]
        for e, load in entries:
            e["ood_val"] = public(evaluate(load(e["path"]).to(device), loader, device, desc="ood_val"))
        ref = res["base"]["ood_val"]
        res["base"]["ood_val_macro_f1"] = ref["macro_f1"]
        for lv in res["levels"]:
            lv.update(ood_fields(lv["ood_val"], ref, seed))
            for r in lv.get("runs", []):
                if r["seed"] == lv["seed"]:  # the exported seed's model, scored above
                    r["ood_val_macro_f1"] = lv["ood_val_macro_f1"]
                else:
                    model = prune.load_pruned(Path(root) / r["path"]).to(device)
                    r["ood_val_macro_f1"] = float(evaluate(model, loader, device, desc="ood_val")["macro_f1"])


def level_cells(entry: dict, is_source: bool) -> dict:
    """A pruning-table row's OOD-val cells (the delta blank on the source row); {} without OOD-val."""
    if "ood_val_macro_f1" not in entry:
        return {}
    return {"OOD-val macro-F1": entry["ood_val_macro_f1"],
            "OOD-val Δ (pts)": "" if is_source else f"{entry['ood_val_delta_pts']:+.2f}"}


def fp32_ood(predict, data_dir, tokenizer, max_length: int, evaluate_predictor) -> dict:
    """Stage 03: {"ood_val": the FP32 source scored by the stage's predictor scorer} and its loader, or {} without."""
    loader = ood_val_loader(data_dir, tokenizer, 64, max_length)
    return {} if loader is None else {"ood_val": evaluate_predictor(predict, loader), "ood_loader": loader}
