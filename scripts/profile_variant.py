"""Where one variant's time goes, per operator group and op type, at batch 1 and batch 32 (lib.measure.profile),
from a run's files: the variants and the INT8 peak stage 05 measured (results/benchmark.json), the shipped model's
serving settings (reports/05_benchmark.json), the validation split (data/).

    python scripts/profile_variant.py [--out-dir .] [--variant NAME] [--n 50] [--threads 2] [--json FILE]

Without --variant: the shipped model, with the serving settings it ships with; any other ONNX variant runs on ONNX
Runtime's defaults with --threads threads. --json also writes the record (strict JSON, atomically).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.files import read_json, write_json  # noqa: E402
from lib.data.corpus import load_splits  # noqa: E402
from lib.measure import profile, serving_search  # noqa: E402
from lib.runtime.onnxrt import Settings  # noqa: E402


def target(out: Path, name: str | None, threads: int) -> tuple[dict, Settings, dict | None]:
    """(the variant's benchmark row, its settings, the run's peak) from the run's stage-05 files."""
    results = read_json(out / "results" / "benchmark.json", "stage 05 results")
    report = read_json(out / "reports" / "05_benchmark.json", "stage 05 report")
    shipped = report["headline"]["recommended"]
    rows = {r["name"]: r for r in results["variants"]}
    name = name or shipped
    if name not in rows:
        raise FinCompressError(f"{name} is not a variant stage 05 measured in {out}; pass one of: {', '.join(rows)}")
    if rows[name]["format"] != "onnx":
        raise FinCompressError(f"{name} is a {rows[name]['format']} model; only ONNX variants are profiled here")
    chosen = serving_search.chosen(report["metrics"].get("serving")) if name == shipped else None
    return rows[name], chosen or Settings(threads), results.get("peak")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=".", help="the run's folder (results/, reports/, data/)")
    ap.add_argument("--variant", help="a variant stage 05 measured (default: the shipped one)")
    ap.add_argument("--n", type=int, default=50, help="validation sentences at batch 1 (8 times as many at batch 32)")
    ap.add_argument("--threads", type=int, default=2, help="threads for a variant that is not the shipped one")
    ap.add_argument("--json", type=Path, help="also write the profile record here")
    args = ap.parse_args(argv)
    if args.n < 1 or args.threads < 1:
        raise FinCompressError("--n and --threads must be at least 1; pass whole numbers of 1 or more")
    out = Path(args.out_dir).resolve()
    row, settings, peak = target(out, args.variant, args.threads)
    texts = load_splits(out / "data")["val"]["text"].tolist()
    record = profile.run(out / row["path"], texts, settings, args.n, peak, row["name"])
    if args.json:  # first: a reader that stops early (| head) must not cost the record
        write_json(args.json, record)
    print(profile.summary(record, ""), profile.text(record), sep="\n\n")
    return 0


if __name__ == "__main__":
    run_cli(main, "profile_variant")
