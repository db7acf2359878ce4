"""How far two trainings of one model (the same commit on two CPUs, or one CPU with its kernels capped) differ in
what stage 04 prunes: the largest relative difference of the Taylor importance scores, and how many heads and FFN
neurons switch sides at each level. Both are scored on the same training batches (stage 04's loader and seed).

    python scripts/importance_drift.py A_DIR B_DIR --data-dir OUT_DIR/data [--levels 0.3,0.5] [--batches 16]

To emulate a second CPU on one box, train and score B with other kernels (other blocking, other rounding):
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python run_all.py --only 01 ...
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core import pipeline  # noqa: E402
from lib.core.params import parse_parameters, sparsities  # noqa: E402
from lib.data.batching import make_loader  # noqa: E402
from lib.data.corpus import load_splits  # noqa: E402
from lib.modeling.device import set_seed  # noqa: E402
from lib.modeling.train import attention_for, load_classifier  # noqa: E402
from lib.techniques import prune  # noqa: E402

KINDS = ("heads", "neurons")
# Stage 04's defaults (batches, seed, levels), read from its parameters cell, their one source.
STAGE04 = {name: p.default for name, p in parse_parameters((pipeline.NOTEBOOKS / "04_pruning.py").read_text()).items()}


def scores_of(folder: Path, train, batches: int, seed: int) -> tuple[dict, dict]:
    """(Taylor scores per kind and layer, the unpruned totals) of the checkpoint in `folder`, on stage 04's batches."""
    cpu = torch.device("cpu")
    set_seed(seed)
    model, tok = load_classifier(str(folder), attention_for(cpu, maps=False))
    return prune.taylor_importance(train(tok), cpu, batches)(model), prune.originals(model)


def switched(a: list, b: list, n_remove: int) -> int:
    """Units that one selection removes and the other keeps (each counted once)."""
    pick = [{(layer, i) for layer, idx in enumerate(prune.select_lowest(s, n_remove)) for i in idx} for s in (a, b)]
    return len(pick[0] ^ pick[1]) // 2


def drift(a: dict, b: dict, full: dict, levels: list[float]) -> list[str]:
    """One line for the scores, then one per level: what switches sides between the two."""
    rel = max(float(((x - y).abs() / x.abs().clamp_min(1e-30)).max()) for k in KINDS for x, y in zip(a[k], b[k]))
    lines = [f"largest relative difference of the importance scores: {rel:.1e}"]
    for level in levels:
        removed = {k: round(level * full[k]) for k in KINDS}
        lines.append(f"{level:.0%}: " + ", ".join(f"{switched(a[k], b[k], n)} of {n} {k} removed switch sides"
                                                  for k, n in removed.items()))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a_dir", type=Path)
    ap.add_argument("b_dir", type=Path)
    ap.add_argument("--data-dir", type=Path, required=True, help="a run's data/ folder (stage 01's splits)")
    ap.add_argument("--levels", default=STAGE04["head_levels"], help="fractions of heads and neurons removed")
    ap.add_argument("--batches", type=int, default=STAGE04["importance_batches"],
                    help="training batches the importance reads")
    ap.add_argument("--seed", type=int, default=STAGE04["seed"])
    args = ap.parse_args(argv)
    levels = sparsities("levels", args.levels)
    splits = load_splits(args.data_dir)
    train = lambda tok: make_loader(splits["train"], tok, STAGE04["batch_size"], STAGE04["max_length"],  # noqa: E731
                                    shuffle=True, seed=args.seed)
    (a, full), (b, full_b) = (scores_of(d, train, args.batches, args.seed) for d in (args.a_dir, args.b_dir))
    if full != full_b:
        raise FinCompressError(f"{args.a_dir} and {args.b_dir} are different architectures ({full} vs {full_b})")
    print("\n".join(drift(a, b, full, levels)))
    return 0


if __name__ == "__main__":
    run_cli(main, "importance_drift")
