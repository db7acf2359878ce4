"""Mutation score per module from the last `make mutation` (mutmut's results in mutants/).

    python scripts/mutation_score.py [--equivalent scripts/mutation_equivalent.txt] [--survivors]

The score is killed / (mutants - equivalent): a timeout counts as killed (the mutant hangs the tests), a mutant
no fast test reaches ("no tests") as not killed. The equivalent list names mutants, one a line, each with why.
"""
import argparse
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402

DETECTED = ("killed", "timeout", "caught by type check")


def statuses(root: Path) -> dict[str, str]:
    """mutant name -> mutmut's status, for every mutant of the last run."""
    if not (root / "mutants").is_dir():
        raise FinCompressError(f"no {root / 'mutants'}; run `make mutation` first")
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    found = dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if "__mutmut_" in line)
    if not found:
        raise FinCompressError(f"{root / 'mutants'} holds no results; run `make mutation` to the end first")
    return found


def module_of(mutant: str) -> str:
    """lib.modeling.device.x_set_seed__mutmut_3 -> lib/modeling/device.py"""
    return mutant.split("__mutmut_")[0].rsplit(".", 1)[0].replace(".", "/") + ".py"


def equivalents(path: Path | None) -> set[str]:
    if path is None:
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line}


def table(found: dict[str, str], equivalent: set[str]) -> list[str]:
    """One line per module and a total: mutants, equivalent, killed, survived, no tests, score."""
    by_module = defaultdict(Counter)
    for name, status in found.items():
        by_module[module_of(name)]["equivalent" if name in equivalent else status] += 1
    lines = [f"{'module':20} {'mutants':>7} {'equiv':>5} {'killed':>6} {'survived':>8} {'no tests':>8} {'score':>6}"]
    total = Counter()
    for module, c in [*sorted(by_module.items()), ("total", None)]:
        c = c if c is not None else total
        if module != "total":
            total.update(c)
        n, killed = sum(c.values()), sum(c[s] for s in DETECTED)
        scored = n - c["equivalent"]
        lines.append(f"{module:20} {n:7} {c['equivalent']:5} {killed:6} {c['survived']:8} {c['no tests']:8} "
                     f"{killed / scored if scored else 1:6.1%}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--equivalent", type=Path, help="mutants argued equivalent, one name a line (# why)")
    ap.add_argument("--survivors", action="store_true", help="also list every mutant not killed")
    args = ap.parse_args()
    found = statuses(Path.cwd())
    equivalent = equivalents(args.equivalent)
    print("\n".join(table(found, equivalent)))
    if args.survivors:
        for name, status in sorted(found.items()):
            if status not in DETECTED and name not in equivalent:
                print(f"{status:10} {name}")
    return 0


if __name__ == "__main__":
    run_cli(main, "mutation_score")
