"""Print README's results table (Markdown) from a run's stage-05 results, so no figure is typed by hand.

    python scripts/results_table.py [OUT_DIR]      # reads OUT_DIR/results/benchmark.json and reports/05_benchmark.json
    python scripts/results_table.py OUT_DIR --readme README.md   # replaces the block between README's markers

Columns: val macro-F1 (what chose), test macro-F1 with its bootstrap 95% CI, the paired test delta to the teacher
(negative = worse) with its 95% CI and McNemar p, its reading, latency, speed-up, size, and where the run counted
them, the batch flips per set (labels that differ between batch 1 and shuffled batches of 32). The shipped row is bold.
When the run scored the out-of-domain sets, a second table: OOD-val / OOD-test macro-F1 and retention vs the teacher
beside the in-domain retention, with the paired OOD-test delta. When the run measured reference rows (the teacher
through off-the-shelf tools), a third table: the shipped model beside each, end to end at batch 1 and 32.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import run_cli  # noqa: E402
from lib.core.files import read_json  # noqa: E402
from lib.core.stats import noise_summary  # noqa: E402
from lib.measure.reference import label  # noqa: E402
from lib.ship import decide  # noqa: E402

BEGIN, END = "<!-- results_table.py: begin -->", "<!-- results_table.py: end -->"
HEADER = ("| variant | val macro-F1 | test macro-F1 (95% CI) | test Δ vs teacher, pts (95% CI) | test p (bootstrap; "
          "Holm) | McNemar p (accuracy, unadjusted) | on test | batch-1 median / p99 (ms) | speed-up | MB on disk "
          "| smaller |\n|---|---|---|---|---|---|---|---|---|---|---|")


def row(v: dict, shipped: str) -> str:
    name = f"**`{v['name']}`** (shipped)" if v["name"] == shipped else f"`{v['name']}`"
    return (f"| {name} | {v['val_macro_f1']:.3f} | {v['test_macro_f1']:.3f} ({v['test_f1_ci_low']:.3f}-"
            f"{v['test_f1_ci_high']:.3f}) | {v['test_delta_pts']:+.2f} ({v['test_delta_ci_low']:+.2f} to "
            f"{v['test_delta_ci_high']:+.2f}) | {v['test_p']:.3f}; {holm_cell(v['test_p_holm'])} | "
            f"{v['test_mcnemar_p']:.2f} | {v['test_reading']} | {v['latency_median_ms']:.2f} / "
            f"{v['latency_p99_ms']:.2f} | {v['speedup_vs_teacher']:.1f}x | {v['disk_bytes'] / 1e6:.1f} | "
            f"{v['size_ratio_vs_teacher']:.1f}x |" + flip_cell(v))


def flip_cell(v: dict) -> str:
    counts = [v[f"{s}_batch_flips"] for s in flip_sets(v)]
    return f" {decide.flip_cell(counts)} |" if counts else ""


def flip_sets(v: dict) -> list[str]:
    """The sets a row has batch flips for (none in runs before they were counted)."""
    return [k.removesuffix("_batch_flips") for k in v if k.endswith("_batch_flips")]


def header(variants: list[dict]) -> str:
    """HEADER, with the batch-flips column where the run counted them."""
    sets = flip_sets(variants[0])
    if not sets:
        return HEADER
    head, rule = HEADER.split("\n")
    return f"{head} batch flips ({' / '.join(sets)}; - outside the F1 budget, not counted) |\n{rule}---|"


def holm_cell(p) -> str:
    """The Holm-adjusted p, or '-' on the teacher's own row (null in the JSON)."""
    return "-" if p is None else f"{p:.3f}"


OOD_HEADER = ("| variant | OOD-val macro-F1 | OOD-val retention | val retention | OOD-test macro-F1 (95% CI) "
              "| OOD-test Δ vs teacher, pts (95% CI) | OOD-test retention | test retention |\n|---|---|---|---|---|---|---|---|")


def ood_row(v: dict, shipped: str) -> str:
    """Out of domain beside in domain: what share of the teacher's macro-F1 each variant keeps on each."""
    name = f"**`{v['name']}`** (shipped)" if v["name"] == shipped else f"`{v['name']}`"
    return (f"| {name} | {v['ood_val_macro_f1']:.3f} | {v['ood_val_retention']:.3f} | {v['val_retention']:.3f} | "
            f"{v['ood_test_macro_f1']:.3f} ({v['ood_test_f1_ci_low']:.3f}-{v['ood_test_f1_ci_high']:.3f}) | "
            f"{v['ood_test_delta_pts']:+.2f} ({v['ood_test_delta_ci_low']:+.2f} to {v['ood_test_delta_ci_high']:+.2f}) | "
            f"{v['ood_test_retention']:.3f} | {v['test_retention']:.3f} |")


def ood_block(variants: list[dict], shipped: str) -> list[str]:
    """The out-of-domain table (financial tweets), when the run scored them; nothing otherwise."""
    if "ood_test_macro_f1" not in variants[0]:
        return []
    return ["", "Out of domain (financial tweets: OOD-val decides with a retention goal, OOD-test reported):", "",
            OOD_HEADER, *(ood_row(v, shipped) for v in variants)]


REF_HEADER = ("| model | what it is | val macro-F1 (Δ vs teacher, pts) | test macro-F1 (Δ vs teacher, pts) | batch-1 "
              "model / end-to-end median (ms) | batch-32 end to end (sentences/s) | MB on disk |\n|---|---|---|---|---|---|---|")


def ref_row(v: dict, name: str, what: str) -> str:
    return (f"| {name} | {what} | {v['val_macro_f1']:.3f} ({v['val_delta_pts']:+.2f}) | {v['test_macro_f1']:.3f} "
            f"({v['test_delta_pts']:+.2f}) | {v['latency_median_ms']:.2f} / {v['e2e_latency_median_ms']:.2f} | "
            f"{v['e2e_throughput_b32_per_s']:.0f} | {v['disk_bytes'] / 1e6:.1f} |")


def ref_block(stage: dict) -> list[str]:
    """The shipped model beside the off-the-shelf reference rows and the two goals read against them; nothing when
    the run measured none (runs before them, or `references` empty)."""
    refs, rec = stage["metrics"].get("references"), stage["metrics"]["recommended"]
    if not refs:
        return []
    b1, b32 = rec["speedup_vs_reference"], rec["throughput_vs_reference"]
    return ["", "Against the off-the-shelf tools (the fine-tuned teacher through each; reference rows, not candidates; "
            f"same harness, same run): the shipped model is {b1:.2f}x faster end to end than the fastest at batch 1 "
            f"and serves {b32:.2f}x the sentences/s of the best at batch 32.", "", REF_HEADER,
            ref_row(rec, f"**`{rec['name']}`** (shipped)", "this study's pick"),
            *(ref_row(r, f"`{r['name']}`", label(r["techniques"])) for r in refs)]


def summary(variants: list[dict]) -> str:
    rest = variants[1:]  # the teacher against itself is no finding
    return noise_summary([v["test_reading"] for v in rest], "test")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=".", help="the --out-dir of the run (default: the repo root)")
    ap.add_argument("--readme", help="write the table between the results_table.py markers of this file instead")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    variants = read_json(out / "results" / "benchmark.json", "stage 05 results")["variants"]
    stage = read_json(out / "reports" / "05_benchmark.json", "stage 05 report")
    if not variants or "test_delta_pts" not in variants[0]:
        from lib.core.errors import FinCompressError
        raise FinCompressError(f"{out / 'results' / 'benchmark.json'} predates the val/test columns; re-run stage 05 "
                               "(python run_all.py --only 05 --force)")
    shipped = stage["headline"]["recommended"]
    table = "\n".join([header(variants), *(row(v, shipped) for v in variants), "", summary(variants), *ood_block(variants, shipped),
                       *ref_block(stage)])
    if args.readme:
        write_block(Path(args.readme), table, stage["run_info"].get("git_commit", "unknown"))
    else:
        print(table)
    return 0


def write_block(readme: Path, table: str, commit: str) -> None:
    """Replace what lies between the markers (kept) with the table, atomically."""
    from lib.core.errors import FinCompressError
    from lib.core.files import write_text_atomic
    text = readme.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise FinCompressError(f"{readme} needs one {BEGIN} and one {END} line around the results table")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    note = f"Generated by `python scripts/results_table.py` from the run at commit {commit}."
    write_text_atomic(readme, f"{head}{BEGIN}\n{note}\n\n{table}\n{END}{tail}")


if __name__ == "__main__":
    run_cli(main, "results_table")
