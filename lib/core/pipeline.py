"""The stage registry: which stages exist and in what order they run.

Order comes from each stage's kind, not from its notebook's number: the source stage (data and teacher)
first, then every compression technique in the order listed, and the benchmark last, whatever is added.
A technique stage lists its variants in its result; the benchmark measures every variant listed before it.
"""
from dataclasses import dataclass
from pathlib import Path

from lib.core.errors import FinCompressError

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks_src"  # one <stage name>.py per stage
KINDS = ("source", "technique", "benchmark")  # the order kinds run in


@dataclass(frozen=True)
class StageEntry:
    name: str    # notebooks_src/<name>.py, reports/<name>.{html,json}
    key: str     # the short name --only takes
    kind: str    # one of KINDS


DECLARED = [
    StageEntry("01_data_teacher", "01", "source"),
    StageEntry("02_distillation", "02", "technique"),
    StageEntry("03_quantization", "03", "technique"),
    StageEntry("04_pruning", "04", "technique"),
    StageEntry("06_stacking", "06", "technique"),  # stacks 03's and 04's work; a technique, so it runs before 05
    StageEntry("05_benchmark", "05", "benchmark"),
]


def in_run_order(entries: list[StageEntry]) -> list[StageEntry]:
    """By kind; stable, so techniques keep the order they are listed in."""
    return sorted(entries, key=lambda s: KINDS.index(s.kind))


STAGES = in_run_order(DECLARED)
NAMES = [s.name for s in STAGES]
SOURCE = next(s.name for s in STAGES if s.kind == "source")
BENCHMARK = next(s.name for s in STAGES if s.kind == "benchmark")


def entry(name: str) -> StageEntry:
    for s in STAGES:
        if s.name == name:
            return s
    raise FinCompressError(f"unknown stage {name!r}; the registry in lib/core/pipeline.py lists {', '.join(NAMES)}")


def before(name: str) -> list[str]:
    """The stages that run before `name`: what it may read."""
    return NAMES[:NAMES.index(name)]


def producers(name: str) -> list[str]:
    """The stages before `name` whose results list variants (the source and every technique)."""
    return [s for s in before(name) if entry(s).kind != "benchmark"]
