"""lib/stats.py: bootstrap interval, calibration error, agreement and one class's recall on known inputs."""
import numpy as np
import pytest

from lib import stats


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    preds = np.where(rng.random(300) < 0.8, labels, (labels + 1) % 3)
    lo, hi = stats.bootstrap_f1(labels, preds, n=300)
    from sklearn.metrics import f1_score
    f1 = f1_score(labels, preds, average="macro")
    assert lo < f1 < hi and hi - lo < 0.15
    assert stats.bootstrap_f1(labels, labels, n=50) == (1.0, 1.0)


def test_ece_known_values():
    labels = [0, 0, 1, 1]
    confident_right = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.9, 0.05]])
    assert stats.expected_calibration_error(confident_right, labels) == pytest.approx(0.1)
    half_right = np.array([[0.9, 0.05, 0.05]] * 4)  # always says class 0 at 0.9; right half the time
    assert stats.expected_calibration_error(half_right, labels) == pytest.approx(0.4)


def test_agreement_and_class_recall():
    a, b = {"labels": [0, 0, 1, 2], "preds": [0, 1, 1, 2]}, {"preds": [0, 0, 1, 1]}
    assert stats.agreement(a, b) == 0.5
    assert stats.class_recall(a, 0) == 0.5 and stats.class_recall(a, 2) == 1.0
    assert np.isnan(stats.class_recall({"labels": [1], "preds": [1]}, 0))
