"""Stage 01: the data splits every later stage reads, and the teacher they are all judged against."""
import pandas as pd

from lib.core import goals
from lib.core.files import relative_path
from lib.core.variants import LABELS
from lib.core.variants import Variant
from lib.data import corpus, ood
from lib.modeling.train import scores, train_teacher
from lib.stages.base import Stage as BaseStage


class Stage(BaseStage):
    NAME = "01_data_teacher"
    STEPS = ("prepare_data", "train_teacher")

    def prepare_data(self) -> dict:
        """Parse, de-duplicate and split 70/15/15 (stratified, seeded); writes data/*.csv."""
        p = self.p
        self.summary = corpus.prepare_data(self.paths["data"], p.data_dir or None, p.seed, p.agreement,
                                         p.fiqa_threshold, p.max_rows, p.allow_partial_data,
                                         p.text_normalization)
        return self.summary

    def train_teacher(self) -> dict:
        """Fine-tune the teacher with early stopping on val macro-F1; the best-val weights are saved."""
        p = self.p
        self.result = train_teacher(self.paths["data"], self.paths["checkpoints"] / "teacher",
                                    self.paths["logs"] / "teacher_training.csv", self.device, teacher=p.teacher,
                                    epochs=p.epochs, lr=p.lr, batch_size=p.batch_size, max_length=p.max_length,
                                    weight_decay=p.weight_decay, warmup_frac=p.warmup_frac, patience=p.patience,
                                    seed=p.seed, amp=p.gpu)
        self.by_source = per_source_scores(corpus.load_splits(self.paths["data"])["test"], self.result["test"]["preds"])
        return self.result

    def evals(self) -> dict:
        return {"teacher val": self.result["val"], "teacher test": self.result["test"]}

    def data_text(self) -> str:
        return data_summary(self.summary)

    def goal_checks(self) -> list[dict]:
        return goals.check_all(goals.from_params(self.params), {"val_macro_f1": self.result["val"]["macro_f1"]}, "teacher")

    def outcome(self) -> dict:
        r, checks = self.result, self.goal_checks()
        path = relative_path(self.paths["checkpoints"] / "teacher", self.paths["root"])
        teacher = Variant("teacher", "hf", path, self.p.teacher, ("finetune",), self.NAME,
                          metrics={"val_macro_f1": r["val"]["macro_f1"], "test_macro_f1": r["test"]["macro_f1"],
                                   "params": r["info"]["num_parameters"]})
        met = all(c["met"] for c in checks)
        metrics = {"data": self.summary, "teacher": r["info"], "history": r["history"],
                   "test_by_source": self.by_source.to_dict("index"), "target_f1": self.p.target_f1, "target_met": met}
        headline = {"teacher val macro-F1": r["val"]["macro_f1"], "teacher test macro-F1": r["test"]["macro_f1"],
                    "best epoch": r["best_epoch"], "target met": met}
        if self.summary["partial_data"]:  # first, so the index page says it before any figure
            headline = {"PARTIAL DATA (allow_partial_data)": "; ".join(self.summary["partial_data"]), **headline}
        verdict = "\n".join(goals.lines(checks) + interpretation(r, self.summary, self.by_source, self.p.target_f1))
        return {"metrics": metrics, "headline": headline, "verdict": verdict, "goals": checks, "variants": [teacher]}


def data_summary(s: dict) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in s["split_sizes"].items())
    bad = sum(s["malformed_lines"].values())
    partial = "".join(f"**Partial data, allowed by `allow_partial_data`**: {note}. Every figure below comes from "
                      "this incomplete data.\n\n" for note in s.get("partial_data", []))
    return partial + (f"Source: `{s['origin']}` (PhraseBank {s['agreement']}). Parsed **{s['rows_parsed']}** sentences; "
            f"skipped **{bad}** malformed lines {s['malformed_lines']}; removed **{s['duplicates_removed']}** duplicates; "
            f"dropped **{s['conflicting_texts_dropped']}** texts ({s['conflicting_rows_dropped']} rows) with conflicting "
            f"labels. Kept **{s['rows_kept']}**: {sizes}. Also saved: **{s.get('transfer_sentences', 0)}** unlabeled "
            f"PhraseBank sentences below {s['agreement']}, outside every split, for distillation (stage 02). Text "
            f"normalization: **{s.get('text_normalization', 'none')}** (applied to every split; `predict` applies it too)."
            "\n\n" + ood.summary_text(s.get("ood", {})))


def per_source_scores(test_df: pd.DataFrame, preds) -> pd.DataFrame:
    """Test macro-F1 and accuracy per data source: FiQA posts and PhraseBank news differ in difficulty."""
    df = test_df.assign(pred=list(preds))
    rows = {src: {"n": len(g), **{k: v for k, v in scores(g["label"], g["pred"]).items() if k != "per_class_f1"}}
            for src, g in df.groupby("source")}
    return pd.DataFrame(rows).T.astype({"n": int})


def interpretation(result: dict, summary: dict, by_source: pd.DataFrame, target: float) -> list[str]:
    """The study's reading of the teacher run, written from the numbers rather than fixed in advance."""
    val, test = result["val"], result["test"]
    weakest = min(test["per_class_f1"], key=test["per_class_f1"].get)
    hardest = by_source["macro_f1"].idxmin()
    met = "meets" if val["macro_f1"] >= target else "does **not** meet"
    return [
        f"* The teacher {met} the {target:.2f} validation target ({val['macro_f1']:.4f}); test macro-F1 is "
        f"{test['macro_f1']:.4f} ({test['macro_f1'] - val['macro_f1']:+.4f} vs validation), chosen at epoch "
        f"{result['best_epoch']} of {len(result['history'])} run.",
        f"* Weakest class on test: **{weakest}** (F1 {test['per_class_f1'][weakest]:.3f}). Negative is the smallest "
        f"class ({summary['class_counts']['train'][LABELS[0]]} training sentences), so it is the first place to "
        "watch when compressing.",
        f"* Hardest source: **{hardest}** (macro-F1 {by_source.loc[hardest, 'macro_f1']:.3f}); FiQA labels come from "
        "thresholded continuous scores on short, informal texts, so they are noisier than PhraseBank's expert agreement.",
        "* Every later stage compares against this teacher on exactly this split: its choices read validation, "
        "its test figures are reported with a paired 95% interval of the difference."]
