"""Goals: thresholds a stage's result or the shipped model must reach.

A goal's value is a notebook parameter (declared once, in the parameters cell of the stage it judges);
this module says what each kind of goal compares, so verdicts, the index page and the scripts all
read the same thing. A stage records its checks in its JSON (`goals`), where later readers find them.
Every goal reads validation figures: test figures are reported, never judged or chosen on.
F1 differences follow one sign convention: delta = (model - reference) in points, negative = worse.
"""
import operator
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    metric: str   # the figure it bounds, as stages name it in their tables
    op: str
    sign: int     # threshold = sign * parameter value (a budget of 1.5 points lost bounds a delta at -1.5)
    phrase: str   # {v} the parameter value, {ref} the reference
    short: str    # badge text on the index page
    fmt: str      # how a value of the metric reads


KINDS = {
    "target_f1": Kind("val_macro_f1", ">=", 1, "validation macro-F1 at least {v}", "val F1 ≥ {v}", "{:.4f}"),
    "max_f1_drop_pts": Kind("val_delta_pts", ">=", -1, "validation macro-F1 at most {v} points below {ref}",
                            "val ΔF1 ≥ -{v} pts", "{:+.2f} points"),
    "min_speedup": Kind("speedup", ">=", 1, "at least {v}x faster than {ref} at batch 1", "speed-up ≥ {v}x",
                        "{:.2f}x"),
    "min_size_ratio": Kind("size_ratio", ">=", 1, "at least {v}x smaller on disk than {ref}", "size ≥ {v}x smaller",
                           "{:.2f}x"),
    # against the off-the-shelf reference rows of the same run (lib.measure.reference), end to end (text in, label out)
    "min_speedup_vs_reference": Kind("speedup_vs_reference", ">=", 1, "at least {v}x faster end to end at batch 1 "
                                     "than the fastest reference row", "≥ {v}x reference (batch 1)", "{:.2f}x"),
    "min_throughput_vs_reference": Kind("throughput_vs_reference", ">=", 1, "at least {v}x the end-to-end batch-32 "
                                        "throughput of the highest-throughput reference row",
                                        "≥ {v}x reference (batch 32)", "{:.2f}x"),
    "min_ood_retention": Kind("ood_val_retention", ">=", 1, "out-of-domain validation macro-F1 at least {v} of {ref}'s",
                              "OOD-val retention ≥ {v}", "{:.3f}"),
}
OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Goal:
    name: str        # the parameter that sets it
    metric: str      # the column it reads in the caller's table
    op: str
    threshold: float
    text: str
    short: str = ""

    def met(self, value):
        """Whether a value (or each value of a pandas Series) meets the goal."""
        return OPS[self.op](value, self.threshold)

    def check(self, value, subject: str, per_seed: list | None = None) -> dict:
        """The JSON record of one check: what was judged, the number, and MET or not; with per_seed (the figure of
        each training seed, `value` being their mean) also in how many seeds it was met."""
        reads = KINDS[self.name].fmt.format(float(value))
        seeds = {}
        if per_seed is not None and len(per_seed) > 1:
            seeds = {"seeds": len(per_seed), "seeds_met": sum(bool(self.met(v)) for v in per_seed)}
            reads += f", the mean of {seeds['seeds']} seeds; met by {seeds['seeds_met']} of them"
        return {"goal": self.name, "text": self.text, "short": self.short, "metric": self.metric,
                "threshold": self.threshold, "subject": subject, "value": float(value), "met": bool(self.met(value)),
                "reads": reads, **seeds}


def from_params(params: dict, ref: str = "the teacher", columns: dict | None = None) -> list[Goal]:
    """Every goal among a stage's parameters, compared against `ref` (words: 'the teacher', 'its FP32 source');
    `columns` renames a metric to the caller's column (stage 05: speedup -> speedup_vs_teacher)."""
    columns = columns or {}
    return [Goal(name, columns.get(k.metric, k.metric), k.op, k.sign * params[name],
                 k.phrase.format(v=params[name], ref=ref), k.short.format(v=params[name]))
            for name, k in KINDS.items() if name in params]


def check_all(goals: list[Goal], row, subject: str, per_seed: dict | None = None) -> list[dict]:
    """Each goal checked on one row (a dict or pandas Series holding every goal's metric); per_seed: metric ->
    each training seed's value, for the goals whose row value is a seed mean."""
    return [g.check(row[g.metric], subject, (per_seed or {}).get(g.metric)) for g in goals]


def all_met(goals: list[Goal], row) -> bool:
    return all(g.met(row[g.metric]) for g in goals)


def lines(checks: list[dict]) -> list[str]:
    """Markdown bullets: MET or NOT MET, the goal, and the number it was judged on."""
    return [f"* **{'MET' if c['met'] else 'NOT MET'}**: {c['subject']}: {c['text']} (it reads {c['reads']})"
            for c in checks]
