"""Stage 04 around lib.prune: which models, sparsity levels, KD recovery, measurements, plots, variants."""
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch.nn.functional as F

from lib import bench, prune
from lib.common import FinCompressError, check_params, check_range, relative_path, sparsities
from lib.data import load_splits, make_loader
from lib.distill import kd_loss
from lib.report import read_stage_metrics
from lib.train import evaluate, load_classifier, model_inputs, predict, public


def parse_levels(head_levels: str, ffn_levels: str) -> list[tuple[float, float]]:
    """Pairs (head fraction, FFN fraction) from two comma-separated lists, in increasing order."""
    heads, ffn = sparsities("head_levels", head_levels), sparsities("ffn_levels", ffn_levels)
    if not heads or len(heads) != len(ffn):
        raise FinCompressError(f"head_levels and ffn_levels need the same number (>= 1) of values; got {len(heads)} and {len(ffn)}")
    levels = list(zip(heads, ffn))
    if levels != sorted(levels) or any(b[1] < a[1] for a, b in zip(levels, levels[1:])):
        raise FinCompressError("head_levels and ffn_levels must both increase: each level continues pruning the previous one")
    return levels


def level_name(level: tuple[float, float]) -> str:
    h, f = (round(x * 100) for x in level)
    return f"{h}" if h == f else f"h{h}_f{f}"


def sources(run: dict, student_dir: str) -> dict:
    """Checkpoints to prune: the teacher of stage 01 and the student ('' = stage 02's best, 'none' = skip)."""
    teacher = run["checkpoints"] / "teacher"
    if not (teacher / "config.json").is_file():
        raise FinCompressError(f"no teacher checkpoint at {teacher}; run stage 01 first (python run_all.py --only 01)")
    out = {"teacher": teacher}
    if student_dir.strip().lower() == "none":
        return out
    if not student_dir:
        if not (run["reports"] / "02_distillation.json").is_file():
            raise FinCompressError(f"{run['reports'] / '02_distillation.json'} is missing; run stage 02 first or pass --set 04.student_dir=none")
        student_dir = read_stage_metrics(run["reports"], "02_distillation")["metrics"]["best_student"]["path"]
    path = Path(student_dir) if Path(student_dir).is_absolute() else run["root"] / student_dir
    if not (path / "config.json").is_file():
        raise FinCompressError(f"student checkpoint {path} not found; pass student_dir=PATH, '' for stage 02's best or none")
    out["student"] = path
    return out


def recovery_loss(teacher_logits, temperature: float, alpha: float):
    """alpha * KD from the unpruned model's precomputed logits + (1 - alpha) * CE on gold labels."""
    def loss_fn(model, batch):
        logits = model(**model_inputs(batch)).logits
        target = teacher_logits[batch["idx"].cpu()].to(logits.device)
        kd, ce = kd_loss(logits, target, temperature), F.cross_entropy(logits.float(), batch["labels"])
        return alpha * kd + (1 - alpha) * ce, {"kd": kd.item(), "ce": ce.item()}
    return loss_fn


def prunable_params(model) -> int:
    """Weights structured pruning can remove: Q/K/V, attention output and FFN matrices (+ their sliced biases)."""
    n = 0
    for block in prune.layers(model):
        att = block.attention
        n += sum(p.numel() for m in (att.self.query, att.self.key, att.self.value) for p in m.parameters())
        n += att.output.dense.weight.numel() + block.output.dense.weight.numel()
        n += sum(p.numel() for p in block.intermediate.dense.parameters())
    return n


def prune_model(name: str, source: Path, run: dict, levels: list, hp: dict) -> dict:
    """Prune one checkpoint level by level (each continues the previous), saving and testing each level."""
    check_params(hp)
    splits, device = load_splits(run["data"]), run["device"]
    model, tok = load_classifier(str(source))
    model.to(device)
    mk = lambda df, bs, shuffle=False: make_loader(df, tok, bs, hp["max_length"], shuffle=shuffle, seed=hp["seed"])
    train, val, test = mk(splits["train"], hp["batch_size"], True), mk(splits["val"], 64), mk(splits["test"], 64)
    base = {"path": source, "params": bench.count_params(model), "prunable": prunable_params(model),
            "test": evaluate(model, test, device, desc="test"), "counts": prune.unit_counts(model)}
    # The unpruned model is the KD teacher of every recovery round: its logits are fixed, so compute once.
    teacher_logits = predict(model, mk(splits["train"], 64), device, desc="kd targets")["logits"]
    loss_fn = recovery_loss(teacher_logits, hp["temperature"], hp["kd_alpha"])
    out = {"name": name, "base": base, "levels": []}
    for level in levels:
        start, label = time.time(), level_name(level)
        log = prune.prune_to(model, train, val, device, head_fraction=level[0], ffn_fraction=level[1],
                             rounds=hp["rounds"], recovery_epochs=hp["recovery_epochs"], lr=hp["lr"], loss_fn=loss_fn,
                             method=hp["method"], batches=hp["importance_batches"], log_dir=run["logs"],
                             desc=f"prune_{name}_{label}")
        path = run["checkpoints"] / "pruned" / f"{name}_{label}"
        prune.save_pruned(model.cpu(), tok, path, {"parent": str(source), "head_fraction": level[0],
                                                   "ffn_fraction": level[1], "hyperparameters": hp})
        model.to(device)
        out["levels"].append({"name": label, "head_fraction": level[0], "ffn_fraction": level[1], "path": path,
                              "counts": prune.unit_counts(model), "params": bench.count_params(model),
                              "sparsity": 1 - prunable_params(model) / base["prunable"],
                              "val": public(evaluate(model, val, device, desc="val")),
                              "test": public(evaluate(model, test, device, desc="test")),
                              "rounds": [_round_summary(r) for r in log], "seconds": round(time.time() - start, 1)})
    base["test"] = public(base["test"])
    return out


def _round_summary(entry: dict) -> dict:
    """A round for the JSON: head indices removed (original numbering), neuron counts only (they are many)."""
    return {"round": entry["round"], "heads_removed": entry["removed"]["heads"],
            "neurons_removed": [len(x) for x in entry["removed"]["neurons"]], "val_macro_f1": entry["val_macro_f1"],
            "history": entry.get("history", [])}


def measure(results: dict, texts: list[str], seq_len: int = 32, threads: int = 2, passes: int = 2, n: int = 64) -> None:
    """Disk bytes and batch-1 latency of every base/level checkpoint, loaded back from disk.

    Models are timed back to back and each keeps its fastest of `passes` passes (bench.fastest_latency).
    """
    for res in results.values():
        _, tok = load_classifier(str(res["base"]["path"]))
        check_range("latency_passes", passes, 1)
        inputs = bench.batch1_inputs(tok, texts, seq_len=seq_len, n=n)
        entries = [(res["base"], lambda p: load_classifier(str(p))[0])] + [(lv, prune.load_pruned) for lv in res["levels"]]
        fns = {i: bench.torch_predict_fn(load(e["path"])) for i, (e, load) in enumerate(entries)}
        best = bench.fastest_latency(fns, inputs, threads=threads, rounds=passes)
        for i, (e, _) in enumerate(entries):
            e["disk_bytes"], e["weight_bytes"], e["latency"] = bench.disk_bytes(e["path"]), bench.weight_bytes(e["path"]), best[i]
        for lv in res["levels"]:
            lv["speedup"] = res["base"]["latency"]["median_ms"] / lv["latency"]["median_ms"]


def table(results: dict) -> pd.DataFrame:
    rows = {}
    for name, res in results.items():
        b = res["base"]
        for lv in [{"name": "0", **b, "speedup": 1.0, "sparsity": 0.0}] + res["levels"]:
            rows[f"{name} {lv['name']}"] = {
                "heads": sum(lv["counts"]["heads"]), "ffn neurons": sum(lv["counts"]["neurons"]),
                "prunable sparsity": lv["sparsity"], "test macro-F1": lv["test"]["macro_f1"],
                "ΔF1 (points)": 100 * (lv["test"]["macro_f1"] - b["test"]["macro_f1"]), "params (M)": lv["params"] / 1e6,
                "params kept": lv["params"] / b["params"], "disk MB": lv["disk_bytes"] / 1e6,
                "weights MB": lv["weight_bytes"] / 1e6, "latency ms": lv["latency"]["median_ms"], "speedup": lv["speedup"]}
    return pd.DataFrame(rows).T.round(4)


def plot_kept(results: dict):
    """Heatmaps of the share of heads and FFN neurons each layer keeps, per model and level."""
    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 5.5), squeeze=False)
    for col, (name, res) in enumerate(results.items()):
        base = res["base"]["counts"]
        for row, kind in enumerate(("heads", "neurons")):
            kept = np.array([lv["counts"][kind] for lv in res["levels"]], dtype=float)
            sns.heatmap(kept / np.array(base[kind]), annot=kept.astype(int), fmt="d", vmin=0, vmax=1, cmap="viridis",
                        ax=axes[row, col], yticklabels=[lv["name"] for lv in res["levels"]],
                        xticklabels=range(len(base[kind])), annot_kws={"fontsize": 7})
            axes[row, col].set(title=f"{name}: {kind} kept (of {base[kind][0]} per layer)", xlabel="layer",
                               ylabel="level (% removed)")
    fig.tight_layout()
    return fig


def plot_curve(results: dict):
    """Test macro-F1 and batch-1 speedup against the share of prunable weights removed."""
    fig, (ax_f1, ax_sp) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, res in results.items():
        xs = [0.0] + [lv["sparsity"] for lv in res["levels"]]
        ax_f1.plot(xs, [res["base"]["test"]["macro_f1"]] + [lv["test"]["macro_f1"] for lv in res["levels"]],
                   marker="o", label=name)
        ax_sp.plot(xs, [1.0] + [lv["speedup"] for lv in res["levels"]], marker="o", label=name)
        ax_f1.axhline(res["base"]["test"]["macro_f1"] - 0.01, ls=":", color=ax_f1.lines[-1].get_color(), lw=1)
    ax_f1.set(title="Test macro-F1 vs sparsity (dotted: 1 point below unpruned)", xlabel="share of prunable weights removed")
    ax_sp.set(title="Batch-1 CPU speedup vs sparsity", xlabel="share of prunable weights removed", ylabel="x faster")
    for ax in (ax_f1, ax_sp):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusions(results: dict) -> dict:
    out = {}
    for name, res in results.items():
        out[f"{name} unpruned"] = res["base"]["test"]
        out.update({f"{name} {lv['name']}%": lv["test"] for lv in res["levels"]})
    return out


def variants(results: dict, root: Path) -> list[dict]:
    """The stage contract's deployable-model list: one `pruned` entry per model and level."""
    return [{"name": f"{name}_pruned_{lv['name']}", "format": "pruned", "path": relative_path(lv["path"], root),
             "parent": name, "test_macro_f1": lv["test"]["macro_f1"], "params": lv["params"],
             "disk_bytes": lv["disk_bytes"], "latency_ms": lv["latency"]["median_ms"]}
            for name, res in results.items() for lv in res["levels"]]


def headline(results: dict) -> dict:
    """Each model's strongest level: F1 change, parameter share kept, speedup."""
    out = {}
    for name, res in results.items():
        lv = res["levels"][-1]
        out[f"{name} unpruned test macro-F1"] = res["base"]["test"]["macro_f1"]
        out[f"{name} {lv['name']}% pruned test macro-F1"] = lv["test"]["macro_f1"]
        out[f"{name} {lv['name']}% params kept"] = lv["params"] / res["base"]["params"]
        out[f"{name} {lv['name']}% batch-1 speedup"] = lv["speedup"]
    return out


def metrics(results: dict, root: Path) -> dict:
    """The JSON form of the results (paths relative to out_dir)."""
    def rel(e):
        return {**e, "path": relative_path(e["path"], root)}
    return {name: {"base": rel(res["base"]), "levels": [rel(lv) for lv in res["levels"]]} for name, res in results.items()}
