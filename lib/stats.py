"""Scores beyond macro-F1: bootstrap intervals, calibration, agreement between two models, one class's recall."""
import numpy as np


def bootstrap_f1(labels, preds, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of macro-F1 over test-set resamples."""
    from sklearn.metrics import f1_score
    labels, preds = np.asarray(labels), np.asarray(preds)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        stats.append(f1_score(labels[idx], preds[idx], average="macro", labels=[0, 1, 2], zero_division=0))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


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
