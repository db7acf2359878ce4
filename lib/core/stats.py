"""Scores beyond macro-F1: bootstrap intervals, paired comparisons with a reference model, calibration, agreement.

Sign convention, everywhere: a delta is (model - reference) in macro-F1 points, so a NEGATIVE delta means
WORSE than the reference (the teacher, or a variant's FP32 source).
"""
from math import comb

import numpy as np

CLASSES = 3  # negative, neutral, positive (lib.core.variants.LABELS order)


def macro_f1_rows(labels: np.ndarray, preds: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """Macro-F1 of each row of (resamples x sentences) label and prediction arrays, as sklearn's
    f1_score(average="macro", labels=range(classes), zero_division=0) computes it for one row."""
    f1 = np.zeros(labels.shape[:-1])
    for c in range(classes):
        is_label, is_pred = labels == c, preds == c
        tp = (is_label & is_pred).sum(-1)
        denom = is_label.sum(-1) + is_pred.sum(-1)  # 2tp + fp + fn
        f1 += np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    return f1 / classes


def resamples(n: int, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """(draws x n) sentence indices drawn with replacement; one matrix serves every model compared on a set."""
    return np.random.default_rng(seed).integers(0, n, (draws, n))


def bootstrap_f1(labels, preds, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of macro-F1 over resamples of the sentences."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    idx = resamples(len(labels), n, seed)
    stats = macro_f1_rows(labels[idx], preds[idx])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def paired_delta(labels, preds, ref_preds, n: int = 1000, seed: int = 0) -> dict:
    """(model - reference) macro-F1 in points with a paired bootstrap 95% CI: each resample scores both
    models on the same sentences, so what the two share cancels out of the interval."""
    labels, preds, ref_preds = np.asarray(labels), np.asarray(preds), np.asarray(ref_preds)
    point = 100 * (macro_f1_rows(labels, preds) - macro_f1_rows(labels, ref_preds))
    idx = resamples(len(labels), n, seed)
    deltas = 100 * (macro_f1_rows(labels[idx], preds[idx]) - macro_f1_rows(labels[idx], ref_preds[idx]))
    return {"delta_pts": float(point), "delta_ci_low": float(np.percentile(deltas, 2.5)),
            "delta_ci_high": float(np.percentile(deltas, 97.5))}


def mcnemar_p(labels, preds, ref_preds) -> float:
    """Exact two-sided McNemar p-value: a binomial(1/2) test on the sentences exactly one of the two models gets right."""
    labels = np.asarray(labels)
    right, ref_right = np.asarray(preds) == labels, np.asarray(ref_preds) == labels
    only_ref, only_model = int((ref_right & ~right).sum()), int((right & ~ref_right).sum())
    n, k = only_ref + only_model, min(only_ref, only_model)
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(k + 1)) / 2 ** n  # exact integers: no underflow at n in the hundreds
    return float(min(1.0, 2 * tail))


def compare(labels, preds, ref_preds, n: int = 1000, seed: int = 0) -> dict:
    """Everything a table needs to say how a model differs from its reference on one set of sentences."""
    return {**paired_delta(labels, preds, ref_preds, n, seed), "mcnemar_p": mcnemar_p(labels, preds, ref_preds)}


def verdict_word(ci_low: float, ci_high: float) -> str:
    """How to describe a paired delta: only an interval that excludes 0 is a difference."""
    if ci_high < 0:
        return "worse"
    if ci_low > 0:
        return "better"
    return "indistinguishable"


def delta_cell(delta: float, lo: float, hi: float) -> str:
    """'+0.84 [-1.20, +2.90]': a delta in points with its 95% interval, as tables show it."""
    return f"{delta:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def noise_summary(lows, highs, name: str) -> str:
    """How many variants' paired CIs against the teacher on set `name` contain 0, exclude it below, above."""
    words = [verdict_word(lo, hi) for lo, hi in zip(lows, highs)]
    return (f"On {name}, {words.count('indistinguishable')} of {len(words)} variants are indistinguishable from the "
            f"teacher (the paired 95% CI of the delta contains 0: within noise), {words.count('worse')} are worse and "
            f"{words.count('better')} better.")


def delta_text(d: dict, ref: str = "the teacher", prefix: str = "") -> str:
    """'-0.84 points (95% CI -2.10 to +0.40, McNemar p 0.31): indistinguishable from the teacher'."""
    ci = f"95% CI {d[prefix + 'delta_ci_low']:+.2f} to {d[prefix + 'delta_ci_high']:+.2f}"
    p = f", McNemar p {d[prefix + 'mcnemar_p']:.2g}" if prefix + "mcnemar_p" in d else ""
    word = verdict_word(d[prefix + "delta_ci_low"], d[prefix + "delta_ci_high"])
    reading = f"indistinguishable from {ref}" if word == "indistinguishable" else f"{word} than {ref}"
    return f"{d[prefix + 'delta_pts']:+.2f} points ({ci}{p}): {reading}"


def expected_calibration_error(probs: np.ndarray, labels, bins: int = 15) -> float:
    """ECE: |confidence - accuracy| averaged over equal-width confidence bins, weighted by bin size."""
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(conf[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def agreement(a: dict, b: dict) -> float:
    """Share of sentences on which two models (their evaluation dicts) predict the same class."""
    return float(np.mean(np.asarray(a["preds"]) == np.asarray(b["preds"])))


def class_recall(m: dict, label: int) -> float:
    """Recall of one class from an evaluation dict (labels and preds); NaN when the class is absent."""
    labels, preds = np.asarray(m["labels"]), np.asarray(m["preds"])
    hit = labels == label
    return float((preds[hit] == labels[hit]).mean()) if hit.any() else float("nan")
