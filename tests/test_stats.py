"""lib/core/stats.py: bootstrap interval and p, Holm, the word, calibration error, agreement and one class's recall
on known inputs."""
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
                                                   "p": 1.0, "mcnemar_p": 1.0}


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
    assert d["p"] == 1 / 501  # no resample reaches 0: the floor that 500 draws can resolve
    assert stats.paired_delta(labels, ref, worse, n=500)["delta_ci_low"] > 0
    # one flipped sentence: a tiny delta whose paired interval straddles 0
    near = ref.copy()
    near[np.flatnonzero(ref == labels)[0]] = (labels[np.flatnonzero(ref == labels)[0]] + 1) % 3
    d = stats.paired_delta(labels, near, ref, n=500)
    assert d["delta_ci_low"] <= 0 <= d["delta_ci_high"] and d["p"] > 0.05
    assert "indistinguishable from the teacher" in stats.delta_text({**d, "p_holm": d["p"], "reading": "indistinguishable",
                                                                      "mcnemar_p": 1.0})
    teacher = {"delta_pts": 0.0, "p": 1.0, "p_holm": None, "reading": "reference"}
    assert stats.delta_text(teacher) == "+0.00 points: the teacher itself, the reference of every delta"
    assert stats.paired_delta(labels, near, ref, n=200, seed=5) == stats.paired_delta(labels, near, ref, n=200, seed=5)


def test_bootstrap_p_counts_the_smaller_tail_twice_and_never_reaches_zero():
    # 10 resampled deltas, 2 at or below 0: p = 2 * 2/10; ties at 0 count on both sides
    assert stats.bootstrap_p([-1.0, 0.0, *[1.0] * 8]) == pytest.approx(0.4)
    assert stats.bootstrap_p([0.0] * 10) == 1.0  # every resample ties: no evidence either way (2 * 1, capped)
    assert stats.bootstrap_p([-0.5, 0.5]) == 1.0
    assert stats.bootstrap_p([2.0] * 9) == pytest.approx(1 / 10)  # none crosses 0: floored at 1/(draws+1), not 0
    assert stats.bootstrap_p([-3.0, *[-1.0] * 18, 0.5]) == pytest.approx(0.1)  # sign does not matter: 2 * 1/20


def test_holm_on_a_hand_worked_family():
    # sorted 0.01, 0.02, 0.03, 0.04 x (4, 3, 2, 1) = 0.04, 0.06, 0.06, 0.04 -> running max 0.04, 0.06, 0.06, 0.06
    assert stats.holm([0.03, 0.01, 0.04, 0.02]).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([0.5, 0.4]).tolist() == pytest.approx([0.8, 0.8])  # 0.4 x 2 = 0.8, then max(0.8, 0.5)
    assert stats.holm([0.9, 0.6, 0.001]).tolist() == pytest.approx([1.0, 1.0, 0.003])  # capped at 1
    assert stats.holm([0.02]).tolist() == [0.02]  # a family of one is not adjusted
    adjusted = stats.holm([0.01, float("nan"), 0.04])  # NaN: not a member, stays NaN, does not grow the family
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert stats.holm([]).tolist() == []


def test_holm_never_lowers_a_p_and_keeps_the_raw_order():
    rng = np.random.default_rng(7)
    for _ in range(200):
        p = rng.random(rng.integers(1, 40)) ** 3  # many small p, as a family of compressed variants gives
        adjusted = stats.holm(p)
        assert (adjusted >= p).all() and (adjusted <= 1).all()
        order = np.argsort(p, kind="stable")
        assert (np.diff(adjusted[order]) >= 0).all()  # a smaller raw p never gets a larger adjusted p


def test_the_word_reads_the_adjusted_p_and_the_sign():
    assert stats.reading(-1.2, 0.049) == "worse" and stats.reading(0.8, 0.01) == "better"
    assert stats.reading(-1.2, 0.05) == "indistinguishable"  # alpha itself is not below alpha
    assert stats.reading(3.0, float("nan")) == "indistinguishable" and stats.reading(0.0, 0.001) == "indistinguishable"
    # the reviewer's case: one row with p 0.02 (its CI excludes 0) among 33 variants: 33 x 0.02 > 0.05
    adjusted, words = stats.family_readings([0.75, *[-0.1] * 32], [0.02, *[0.9] * 32])
    assert adjusted[0] == pytest.approx(0.66) and words[0] == "indistinguishable"
    adjusted, words = stats.family_readings([-2.0, 0.5, 1.0], [0.001, 0.3, float("nan")])
    assert adjusted == [pytest.approx(0.002), pytest.approx(0.3), None] and words == ["worse", "indistinguishable",
                                                                                        "indistinguishable"]
    entries = [{"test_delta_pts": -2.0, "test_p": 0.01}, {"test_delta_pts": 1.0, "test_p": 0.02}]
    assert stats.judge_family(entries) == 2
    assert [(e["test_p_holm"], e["test_reading"]) for e in entries] == [(0.02, "worse"), (0.02, "better")]
    assert stats.family_size([None, 0.1, float("nan"), 0.3]) == 2


def test_the_rule_is_stated_with_its_family():
    assert stats.rule_text(33) == ("word (better / worse / indistinguishable): paired bootstrap test of the macro-F1 "
                                   "delta = 0, p Holm-adjusted over the 33 variants compared with the teacher, alpha "
                                   "0.05; McNemar p (accuracy) is unadjusted, shown only")
    summary = stats.noise_summary(["worse", "indistinguishable", "better", "indistinguishable"], "test")
    assert summary.startswith("On test, 2 of 4 variants are indistinguishable from the teacher, 1 are worse and 1 better")
    assert "over the 4 variants compared with the teacher" in summary
