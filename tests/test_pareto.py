"""lib/ship/pareto.py: the frontier, and numbered labels that never overlap however the points cluster."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lib.ship import pareto  # noqa: E402


def test_pareto_front():
    df = pd.DataFrame({"val_macro_f1": [0.90, 0.895, 0.85, 0.89], "latency_median_ms": [10.0, 3.0, 1.0, 4.0]})
    assert pareto.pareto_front(df, "latency_median_ms").tolist() == [True, True, True, False]


def test_labels_of_a_tight_cluster_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = [1.0] * 6 + [1.01, 5.0], [0.8] * 6 + [0.801, 0.9]
    ax.scatter(xs, ys)
    boxes = pareto.place_labels(ax, xs, ys, [str(i) for i in range(8)])
    assert len(boxes) == 8
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_tradeoff_plot_draws_the_goals():
    df = pd.DataFrame({"name": ["teacher", "a", "b"], "stage": ["01", "02", "05"], "val_macro_f1": [0.9, 0.89, 0.85],
                       "latency_median_ms": [10.0, 2.0, 1.0], "disk_bytes": [90e6, 30e6, 10e6]})
    fig = pareto.plot_tradeoffs(df, "a", {"max_f1_drop_pts": 1.5, "min_speedup": 8.0, "min_size_ratio": 6.0})
    lat, size = fig.axes[:2]
    assert lat.get_xlabel().startswith("batch-1") and "MB" in size.get_xlabel()
    vertical = [l.get_xdata()[0] for l in lat.lines if len(set(l.get_xdata())) == 1]
    assert 10.0 / 8.0 in vertical and [l.get_xdata()[0] for l in size.lines if len(set(l.get_xdata())) == 1] == [15.0]
    assert sorted(t.get_text() for t in lat.texts) == ["0", "1", "2"]
    plt.close(fig)
