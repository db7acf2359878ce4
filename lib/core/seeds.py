"""Training seeds: the seeds a stage trains with, the spread of a figure over them, and the decisions that read
their mean. A run is one training seed's record: {"seed": s, "val_macro_f1": ..., "test_macro_f1": ..., ...}.

Every decision reads validation only (the mean over seeds, ties to the first candidate listed); test and OOD-val
are summarized beside it, never chosen on.
"""
import math
import statistics

from lib.core.errors import FinCompressError
from lib.core.variants import Variant

DECIDES = "val_macro_f1"  # the figure every seed decision reads
SEED_LIMIT = 2 ** 32      # seeds wrap around inside numpy's and torch's range


def training_seeds(seed: int, n: int) -> list[int]:
    """The n seeds a stage trains with: seed, seed + 1, ... (the first is the study's seed, so n = 1 is the old run)."""
    if n < 1:
        raise FinCompressError(f"seeds={n}: a stage trains with at least one seed; pass seeds >= 1")
    return [(seed + i) % SEED_LIMIT for i in range(n)]


def spread(values: list[float]) -> dict:
    """n, mean, sample sd (None for one value) and min-max of one figure over seeds."""
    vals = [float(v) for v in values]
    return {"n": len(vals), "mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals)}


def summary(runs: list[dict], keys: tuple = ("val_macro_f1", "test_macro_f1", "ood_val_macro_f1")) -> dict:
    """Each key's spread over the runs that have it (OOD-val is missing where stage 01 wrote no OOD sets)."""
    return {k: spread([r[k] for r in runs]) for k in keys if runs and all(r.get(k) is not None for r in runs)}


def mean_of(runs: list[dict], key: str = DECIDES) -> float:
    return statistics.fmean(r[key] for r in runs)


def median_run(runs: list[dict]) -> dict:
    """The run a stage exports: the median seed on val (the lower median for an even count; equal val -> lower seed)."""
    ordered = sorted(runs, key=lambda r: (r[DECIDES], r["seed"]))
    return ordered[(len(ordered) - 1) // 2]


def folder_name(name: str, seed: int, exported: int) -> str:
    """Where a seed's model is saved: the exported seed under the model's own name, the others beside it by seed."""
    return name if seed == exported else f"{name}_seed{seed}"


def val_deltas(runs: list[dict], reference_f1: float) -> list[float]:
    """Each seed's val macro-F1 minus the reference's, in points (negative = worse)."""
    return [100 * (r[DECIDES] - reference_f1) for r in runs]


def best_on_mean(candidates: dict[str, list[dict]]) -> str:
    """The candidate with the highest mean val macro-F1 over its seeds; a tie goes to the first one listed."""
    best, best_mean = None, -math.inf
    for name, runs in candidates.items():
        m = mean_of(runs)
        if m > best_mean:
            best, best_mean = name, m
    return best


def spread_text(s: dict, digits: int = 4) -> str:
    """'0.8712 ± 0.0041 (0.8667-0.8751)': mean ± sd (min-max); one seed reads as the figure alone."""
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def per_seed_best(candidates: dict[str, list[dict]]) -> dict[int, str]:
    """Which candidate each seed alone would pick on val (candidates trained with the same seeds, in the same order)."""
    by_seed = {}
    for name, runs in candidates.items():
        for r in runs:
            if r["seed"] not in by_seed or r[DECIDES] > by_seed[r["seed"]][1]:
                by_seed[r["seed"]] = (name, r[DECIDES])
    return {s: name for s, (name, _) in by_seed.items()}


def twins(v: Variant) -> list[Variant]:
    """The same recipe as `v` from each of its other training seeds (metrics seed_runs with a checkpoint path):
    scored by stage 05 so that the ship rule reads the seed mean; never candidates themselves."""
    exported = v.metrics.get("seed")
    return [Variant(f"{v.name}_seed{r['seed']}", v.format, r["path"], v.source, v.techniques, v.stage, v.precision,
                    {"twin_of": v.name, "seed": r["seed"]})
            for r in v.metrics.get("seed_runs", []) if r["seed"] != exported and r.get("path")]
