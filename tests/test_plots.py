"""lib/report/plots.py: the training-curve figure every training draws (teacher, students, QAT, pruning recovery)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lib.report import plots  # noqa: E402


def run(f1s=(0.855, 0.88), per_epoch=5, history=True) -> dict:
    """fit's record of a run with len(f1s) epochs of `per_epoch` logged steps: falling loss, decaying lr."""
    total = per_epoch * len(f1s)
    steps = [{"step": s, "epoch": (s - 1) // per_epoch + 1, "loss": 1.1 / s, "lr": 1e-4 * (total - s + 1) / total}
             for s in range(1, total + 1)]
    return {"steps": steps, "history": [{"epoch": e, "val_f1": f} for e, f in enumerate(f1s, 1)] if history else []}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_every_panel_names_both_axes_and_f1_is_not_a_sliver():
    fig = plots.plot_training({"a": run(), "b": run((0.86, 0.87, 0.875), per_epoch=4)}, "students", target=0.87)
    assert len(fig.axes) == 3 and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    loss, lr, f1 = fig.axes
    assert "training loss" in loss.get_ylabel() and "learning rate" in lr.get_ylabel()
    assert f1.get_ylabel() == "validation macro-F1"
    lo, hi = f1.get_ylim()  # the data span 0.855-0.88: the axis must still show a readable range
    assert hi <= 1.0 and hi - lo >= 0.15 - 1e-9 and lo <= 0.855 - 0.05 + 1e-9 and hi >= 0.88
    ends = {line.get_xdata()[0] for line in loss.get_lines() if len(set(line.get_xdata())) == 1}
    assert ends == {5, 4, 8}  # epoch ends (not the last) of each run, dotted


def test_runs_without_validation_get_two_panels_and_empty_runs_are_left_out():
    fig = plots.plot_training({"qat": run(history=False), "none": {"steps": [], "history": []}}, "QAT")
    assert len(fig.axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert fig.axes[0].get_legend_handles_labels()[1] == ["qat"]


def test_no_training_says_so():
    fig = plots.plot_training({"level 50% round 1": {"history": []}}, "recovery")
    assert "no training" in " ".join(t.get_text() for t in fig.axes[0].texts)


def test_reference_line_is_drawn_and_kept_in_view():
    fig = plots.plot_training({"teacher QAT": run((0.95,)) | {"reference": ("FP32 val", 0.70)}}, "QAT")
    f1 = fig.axes[2]
    lo, hi = f1.get_ylim()
    assert lo <= 0.70 and hi >= 0.95 and any("FP32 val 0.700" in t for t in f1.get_legend_handles_labels()[1])


@pytest.mark.parametrize("values, target", [([0.855, 0.88], 0.87), ([0.01, 0.02], None), ([0.99, 1.0], 0.87),
                                            ([0.3, 0.9], 0.5), ([0.5], None)])
def test_f1_limits(values, target):
    lo, hi = plots.f1_limits(values, target)
    shown = [*values, *([target] if target is not None else [])]
    assert 0.0 <= lo <= min(shown) and max(shown) <= hi <= 1.0
    assert hi - lo >= 0.15 - 1e-9
