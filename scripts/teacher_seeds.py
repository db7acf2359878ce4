"""The teacher's training-seed spread, shown once (issue 31: the study trains the teacher with one seed). Fine-tunes
stage 01's teacher again on a run's splits with the seeds after the run's (its hyperparameters read from the run's
stage-01 report), scores val, test and OOD-val the same way as the run's own teacher, and prints one line per seed
and the spread (mean, sample sd, min-max); the run's teacher is the first seed and is not retrained.

    python scripts/teacher_seeds.py OUT_DIR [--seeds 3]
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core import seeds  # noqa: E402
from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.files import read_json  # noqa: E402
from lib.data import ood  # noqa: E402
from lib.data.batching import make_loader  # noqa: E402
from lib.data.corpus import load_splits  # noqa: E402
from lib.modeling.device import resolve_device, set_seed  # noqa: E402
from lib.modeling.train import attention_for, evaluate, load_classifier, train_teacher  # noqa: E402

HYPERPARAMETERS = ("teacher", "epochs", "lr", "batch_size", "max_length", "weight_decay", "warmup_frac", "patience")


def run_params(out_dir: Path) -> dict:
    """Stage 01's parameters as the run used them (its report), or one line saying what is missing."""
    report = out_dir / "reports" / "01_data_teacher.json"
    if not report.is_file():
        raise FinCompressError(f"{out_dir} has no {report.relative_to(out_dir)}: pass the folder a full run wrote "
                               "(python run_all.py --out-dir DIR)")
    return read_json(report)["run_info"]["params"]


def scored(folder: Path, splits: dict, params: dict, device) -> dict:
    """Macro-F1 of the classifier in `folder` on val, test and OOD-val (where the run wrote it), batches as stage 01's."""
    model, tok = load_classifier(str(folder), attention_for(device))
    model.to(device)
    return {s: evaluate(model, make_loader(splits[s], tok, params["batch_size"] * 2, params["max_length"]), device,
                        desc=s)["macro_f1"] for s in ("val", "test", "ood_val") if s in splits}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, help="a run's folder (data/, checkpoints/teacher, reports/)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds in all, the run's own first [min 2]")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        raise FinCompressError(f"--seeds {args.seeds}: a spread needs at least 2 seeds; pass --seeds 2 or more")
    params, device = run_params(args.out_dir), resolve_device(False)
    data_dir, first, *others = args.out_dir / "data", *seeds.training_seeds(params["seed"], args.seeds)
    splits = {**load_splits(data_dir), **ood.load_ood_sets(data_dir)}  # read once, scored for every seed
    runs = {first: scored(args.out_dir / "checkpoints" / "teacher", splits, params, device)}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in others:
            set_seed(seed)  # as stage 01 starts from its seed
            train_teacher(data_dir, Path(tmp) / f"teacher_seed{seed}", Path(tmp) / f"seed{seed}.csv", device,
                          **{k: params[k] for k in HYPERPARAMETERS}, seed=seed)
            runs[seed] = scored(Path(tmp) / f"teacher_seed{seed}", splits, params, device)
    for seed, f1 in runs.items():
        print(f"seed {seed}{' (the run)' * (seed == first)}: " + ", ".join(f"{s} {v:.4f}" for s, v in f1.items()))
    for s in runs[first]:
        sp = seeds.spread([f1[s] for f1 in runs.values()])
        print(f"{s}: mean {sp['mean']:.4f}, sd {sp['sd']:.4f}, min-max {sp['min']:.4f}-{sp['max']:.4f} over {sp['n']} seeds")
    return 0


if __name__ == "__main__":
    run_cli(main, "teacher_seeds")
