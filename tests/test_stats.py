"""lib/core/stats.py: bootstrap interval, calibration error, agreement and one class's recall on known inputs."""
import numpy as np
import pytest

from lib.core import stats


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


def test_vectorised_macro_f1_matches_sklearn_and_the_old_loop():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (20, 40))
    preds = np.where(rng.random((20, 40)) < 0.6, labels, rng.integers(0, 3, (20, 40)))
    preds[0] = 0  # a row where two classes are never predicted: zero_division=0, as sklearn
    expected = [f1_score(l, p, average="macro", labels=[0, 1, 2], zero_division=0) for l, p in zip(labels, preds)]
    assert stats.macro_f1_rows(labels, preds) == pytest.approx(expected)


def test_identical_predictions_differ_by_nothing():
    labels, preds = [0, 1, 2, 2, 1, 0, 1], [0, 1, 1, 2, 1, 2, 1]
    assert stats.compare(labels, preds, preds) == {"delta_pts": 0.0, "delta_ci_low": 0.0, "delta_ci_high": 0.0,
                                                   "mcnemar_p": 1.0}


def test_mcnemar_exact_on_a_known_discordant_split():
    # 10 sentences only the model gets right, 1 only the reference gets right, 5 both get right:
    # p = 2 * P(Binomial(11, 1/2) <= 1) = 2 * (1 + 11) / 2048
    labels = np.zeros(16, dtype=int)
    model = np.array([0] * 10 + [1] + [0] * 5)
    ref = np.array([1] * 10 + [0] + [0] * 5)
    assert stats.mcnemar_p(labels, model, ref) == 24 / 2048
    assert stats.mcnemar_p(labels, ref, model) == 24 / 2048  # symmetric
    # 5 against 0: 2 * 1/32
    assert stats.mcnemar_p(np.zeros(5, int), np.zeros(5, int), np.ones(5, int)) == 2 / 32
    from scipy.stats import binomtest
    rng = np.random.default_rng(1)
    labels, a, b = rng.integers(0, 3, 300), rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    ra, rb = a == labels, b == labels
    expected = binomtest(int((ra & ~rb).sum()), int((ra ^ rb).sum()), 0.5).pvalue
    assert stats.mcnemar_p(labels, a, b) == pytest.approx(expected)


def test_paired_delta_sign_and_interval():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    ref = np.where(rng.random(400) < 0.9, labels, (labels + 1) % 3)
    worse = np.where(rng.random(400) < 0.6, labels, (labels + 1) % 3)   # far worse than the reference
    d = stats.paired_delta(labels, worse, ref, n=500)
    assert d["delta_pts"] < 0 and d["delta_ci_low"] <= d["delta_pts"] <= d["delta_ci_high"] < 0  # negative = worse
    assert stats.verdict_word(d["delta_ci_low"], d["delta_ci_high"]) == "worse"
    assert stats.paired_delta(labels, ref, worse, n=500)["delta_ci_low"] > 0
    # one flipped sentence: a tiny delta whose paired interval straddles 0
    near = ref.copy()
    near[np.flatnonzero(ref == labels)[0]] = (labels[np.flatnonzero(ref == labels)[0]] + 1) % 3
    d = stats.paired_delta(labels, near, ref, n=500)
    assert d["delta_ci_low"] <= 0 <= d["delta_ci_high"]
    assert "indistinguishable from the teacher" in stats.delta_text({**d, "mcnemar_p": 1.0})
    assert stats.paired_delta(labels, near, ref, n=200, seed=5) == stats.paired_delta(labels, near, ref, n=200, seed=5)
