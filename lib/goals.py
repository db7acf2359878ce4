"""Goals: thresholds a stage's result or the shipped model must reach.

A goal's value is a notebook parameter (declared once, in the parameters cell of the stage it judges);
this module says what each kind of goal compares, so verdicts, the index page and the scripts all
read the same thing. A stage records its checks in its JSON (`goals`), where later readers find them.
"""
import operator
from dataclasses import dataclass

# parameter name -> (metric it bounds, comparison, phrase with {v} the threshold and {ref} the reference)
KINDS = {
    "target_f1": ("val_macro_f1", ">=", "validation macro-F1 at least {v}"),
    "max_f1_drop_pts": ("f1_drop_pts", "<=", "test macro-F1 at most {v} points below {ref}"),
    "min_speedup": ("speedup", ">=", "at least {v}x faster than {ref} at batch 1"),
    "min_size_ratio": ("size_ratio", ">=", "at least {v}x smaller on disk than {ref}"),
}
OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Goal:
    name: str        # the parameter that sets it
    metric: str      # the figure it bounds, as stages name it in their tables
    op: str
    threshold: float
    text: str

    def met(self, value):
        """Whether a value (or each value of a pandas Series) meets the goal."""
        return OPS[self.op](value, self.threshold)

    def check(self, value, subject: str) -> dict:
        """The JSON record of one check: what was judged, the number, and MET or not."""
        return {"goal": self.name, "text": self.text, "metric": self.metric, "threshold": self.threshold,
                "subject": subject, "value": float(value), "met": bool(self.met(value))}


def from_params(params: dict, ref: str = "the teacher") -> list[Goal]:
    """Every goal among a stage's parameters, compared against `ref` (words: 'the teacher', 'its FP32 source')."""
    return [Goal(name, metric, op, params[name], phrase.format(v=params[name], ref=ref))
            for name, (metric, op, phrase) in KINDS.items() if name in params]


def check_all(goals: list[Goal], row, subject: str) -> list[dict]:
    """Each goal checked on one row (a dict or pandas Series holding every goal's metric)."""
    return [g.check(row[g.metric], subject) for g in goals]


def all_met(goals: list[Goal], row) -> bool:
    return all(g.met(row[g.metric]) for g in goals)


def lines(checks: list[dict]) -> list[str]:
    """Markdown bullets: MET or NOT MET, the goal, and the number it was judged on."""
    return [f"* **{'MET' if c['met'] else 'NOT MET'}**: {c['subject']} {c['text']} ({c['metric']} {c['value']:.4g})"
            for c in checks]
