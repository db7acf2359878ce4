"""Scores beyond macro-F1: bootstrap intervals, paired comparisons with a reference model, calibration, agreement.

Sign convention, everywhere: a delta is (model - reference) in macro-F1 points, so a NEGATIVE delta means
WORSE than the reference (the teacher, or a variant's FP32 source).

The one rule for the word (better / worse / indistinguishable), stated in RULE: the paired bootstrap test of delta = 0,
its p Holm-adjusted over the family of variants a page compares with the same reference, at ALPHA.
"""
from math import comb

import numpy as np

CLASSES = 3  # negative, neutral, positive (lib.core.variants.LABELS order)
ALPHA = 0.05
RULE = ("word (better / worse / indistinguishable): paired bootstrap test of the macro-F1 delta = 0, p Holm-adjusted "
        "over the {family} variants compared with {ref}, alpha {alpha}; McNemar p (accuracy) is unadjusted, shown only")


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
            "delta_ci_high": float(np.percentile(deltas, 97.5)), "p": bootstrap_p(deltas)}


def bootstrap_p(deltas) -> float:
    """Two-sided p for delta = 0 from resampled deltas: twice the smaller tail share (ties count on both sides),
    never below 1/(draws+1), the least that draws resamples can resolve."""
    deltas = np.asarray(deltas)
    tail = min(float((deltas <= 0).mean()), float((deltas >= 0).mean()))
    return min(1.0, max(2 * tail, 1 / (len(deltas) + 1)))


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


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment over one family, in the input order; NaN entries stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known], kind="stable")]
    scaled = (len(order) - np.arange(len(order))) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))  # the running max keeps adjusted p monotone in raw p
    return out


def reading(delta: float, p_holm: float, alpha: float = ALPHA) -> str:
    """The word for a paired delta: a difference only where the Holm-adjusted p is below alpha (NaN p: none)."""
    if not p_holm < alpha or delta == 0:
        return "indistinguishable"
    return "better" if delta > 0 else "worse"


def family_readings(deltas, pvalues) -> tuple[list, list[str]]:
    """One family (every variant compared with the same reference on one set): Holm-adjusted p (None where a p is
    absent, as strict JSON wants) and the word of each."""
    adjusted = holm(pvalues)
    return ([None if np.isnan(a) else float(a) for a in adjusted],
            [reading(d, a) for d, a in zip(deltas, adjusted)])


def judge_family(entries: list[dict], prefix: str = "test_") -> int:
    """Holm over one family of result dicts, each compared with its own reference: adds {prefix}p_holm and
    {prefix}reading to each in place; returns the family's size."""
    adjusted, words = family_readings([e[prefix + "delta_pts"] for e in entries], [e[prefix + "p"] for e in entries])
    for e, a, w in zip(entries, adjusted, words):
        e.update({prefix + "p_holm": a, prefix + "reading": w})
    return len(entries)


def family_size(adjusted) -> int:
    """How many variants a Holm adjustment counted: the entries that have an adjusted p."""
    return sum(1 for a in adjusted if a is not None and a == a)  # None in JSON rows, NaN in frames


def rule_text(family: int, ref: str = "the teacher") -> str:
    """The rule as every table that prints a word states it beside the table, with the family's size."""
    return RULE.format(family=family, ref=ref, alpha=ALPHA)


def delta_cell(delta: float, lo: float, hi: float) -> str:
    """'+0.84 [-1.20, +2.90]': a delta in points with its 95% interval, as tables show it."""
    return f"{delta:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def noise_summary(words, name: str, ref: str = "the teacher") -> str:
    """How many variants read indistinguishable from, worse and better than the reference on set `name`, and the rule."""
    words = list(words)
    return (f"On {name}, {words.count('indistinguishable')} of {len(words)} variants are indistinguishable from "
            f"{ref}, {words.count('worse')} are worse and {words.count('better')} better ({rule_text(len(words), ref)}).")


def delta_text(d: dict, ref: str = "the teacher", prefix: str = "") -> str:
    """'-0.84 points (95% CI -2.10 to +0.40, bootstrap p 0.31, Holm-adjusted 1, McNemar p 0.31): indistinguishable
    from the teacher'; the word is d's `reading`, from the Holm-adjusted p of its family."""
    word = d[prefix + "reading"]
    if word == "reference":  # the reference's own row: nothing was compared
        return f"{d[prefix + 'delta_pts']:+.2f} points: {ref} itself, the reference of every delta"
    ci = f"95% CI {d[prefix + 'delta_ci_low']:+.2f} to {d[prefix + 'delta_ci_high']:+.2f}"
    p = f", bootstrap p {d[prefix + 'p']:.2g}, Holm-adjusted {d[prefix + 'p_holm']:.2g}"
    mcnemar = f", McNemar p {d[prefix + 'mcnemar_p']:.2g}" if prefix + "mcnemar_p" in d else ""
    said = f"indistinguishable from {ref}" if word == "indistinguishable" else f"{word} than {ref}"
    return f"{d[prefix + 'delta_pts']:+.2f} points ({ci}{p}{mcnemar}): {said}"


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
