"""Stage 04: the teacher and the best student pruned level by level (heads and FFN neurons), KD recovery, timing."""
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.core import goals, stats
from lib.core.errors import FinCompressError
from lib.core.files import relative_path
from lib.core.params import percent, sparsities
from lib.core.variants import Variant
from lib.data.batching import make_loader
from lib.data.corpus import load_splits, load_transfer
from lib.measure import bench, ood_eval
from lib.modeling.distributed import rank0_only
from lib.modeling.losses import precomputed_kd_loss
from lib.modeling.train import attention_for, evaluate, fit, load_classifier, logits_over, public
from lib.report.plots import legend_outside
from lib.runtime.pytorch import torch_predictor
from lib.stages.base import Stage as BaseStage
from lib.techniques import prune


class Stage(BaseStage):
    NAME = "04_pruning"
    STEPS = ("pick_models", "prune", "measure")

    def pick_models(self) -> dict[str, Variant]:
        """Sparsity levels, and the models to prune by role (teacher, student)."""
        self.levels = parse_levels(self.p.head_levels, self.p.ffn_levels)
        self.models = self.sources(self.p.student_dir)
        return self.models

    def describe(self) -> str:
        return (f"Pruning **{', '.join(self.models)}** to levels {[level_name(l) for l in self.levels]} "
                "(% of heads, % of FFN neurons removed).")

    def prune(self) -> dict:
        """Each model pruned level by level; each level's checkpoint written as soon as it is reached."""
        self.results = {role: prune_model(role, v, self.paths, self.device, self.levels, self.params)
                        for role, v in self.models.items()}
        return self.results

    def measure(self) -> pd.DataFrame:
        """Every checkpoint reloaded from disk and timed on real test sentences, one at a time; then each level
        judged against its unpruned source (val for the goals, test reported with its paired delta)."""
        p = self.p
        splits = load_splits(self.paths["data"])
        # CPU timing on an idle CPU: rank 0 alone under a launcher, the others receive its figures
        self.results = rank0_only(measure, self.results, splits["test"]["text"].tolist(), p.latency_seq_len, p.threads,
                                  p.latency_passes, p.latency_n)
        # after every training run: a loader's first batch draws from the global RNG, so no earlier evaluation is added
        for res in self.results.values():
            model, tok = load_classifier(str(res["base"]["path"]))
            res["base"]["val"] = public(evaluate(model, make_loader(splits["val"], tok, 64, p.max_length), self.device,
                                                 desc="unpruned val"))
        ood_eval.score_pruned(self.results, self.paths["data"], p.max_length, self.device, p.seed)  # reported only
        judge(self.results, self.stage_goals(), p.seed)
        return table(self.results)

    def stage_goals(self) -> list:
        return goals.from_params(self.params, ref="its unpruned source")

    def chosen(self) -> dict:
        """The level each model would ship, chosen on validation."""
        return {role: best_level(res, self.stage_goals()) for role, res in self.results.items()}

    def goal_checks(self) -> list[dict]:
        return [c for role, lv in self.chosen().items()
                for c in goals.check_all(self.stage_goals(), lv, f"{role}_pruned_{lv['name']}")]

    def outcome(self) -> dict:
        root = self.paths["root"]
        variants = [self.models[role].derive(f"{role}_pruned_{lv['name']}", "pruned", relative_path(lv["path"], root),
                                             "prune", self.NAME, test_macro_f1=lv["test"]["macro_f1"],
                                             val_macro_f1=lv["val"]["macro_f1"], params=lv["params"],
                                             disk_bytes=lv["disk_bytes"], latency_ms=lv["latency"]["median_ms"],
                                             head_fraction=lv["head_fraction"], ffn_fraction=lv["ffn_fraction"])
                    for role, res in self.results.items() for lv in res["levels"]]
        checks = self.goal_checks()
        return {"metrics": {"models": metrics(self.results, root), "hyperparameters": self.params,
                            "chosen": {role: lv["name"] for role, lv in self.chosen().items()}},
                "headline": headline(self.results, self.chosen()), "goals": checks,
                "verdict": verdict(self.results, self.chosen(), checks), "variants": variants}


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
    h, f = (percent(x) for x in level)
    return f"{h}" if h == f else f"h{h}_f{f}"


def prune_model(name: str, source: Variant, paths: dict, device, levels: list, p: dict) -> dict:
    """Prune one checkpoint level by level (each continues the previous), saving and testing each level."""
    splits, src, amp = load_splits(paths["data"]), source.location(paths["root"]), p["gpu"]
    model, tok = load_classifier(str(src), attention_for(device, maps=p["importance"] == "entropy"))
    model.to(device)

    def loader(df, bs, shuffle=False):
        return make_loader(df, tok, bs, p["max_length"], shuffle=shuffle, seed=p["seed"])
    train, val, test = loader(splits["train"], p["batch_size"], True), loader(splits["val"], 64), loader(splits["test"], 64)
    # recovery KD also reads the unlabeled transfer sentences (label -1: the teacher's soft labels only)
    kd_df = (pd.concat([splits["train"], load_transfer(paths["data"])], ignore_index=True) if p["transfer"]
             else splits["train"])
    base = {"path": src, "params": bench.count_params(model), "prunable": prune.prunable_params(model),
            "test": evaluate(model, test, device, amp, desc="test"), "counts": prune.unit_counts(model)}
    # The unpruned model is the KD teacher of every recovery round: its logits are fixed, so compute once, and
    # keep them on the device, where each recovery batch looks its rows up without a trip to the host.
    teacher_logits = logits_over(model, loader(kd_df, 64), device, amp, desc="kd targets")["logits"].to(device)
    loss_fn = precomputed_kd_loss(teacher_logits, p["alpha"], p["temperature"])
    out = {"name": name, "base": base, "levels": [], "recovery": {}}
    importance = prune.IMPORTANCE[p["importance"]](train, device, p["importance_batches"], amp)  # gold labels only
    for level in levels:
        start, label, desc = time.time(), level_name(level), f"prune_{name}_{level_name(level)}"
        recover = recoverer(loader(kd_df, p["batch_size"], True), val, device, p, loss_fn, paths["logs"], desc, amp)
        log = prune.prune_to(model, importance, head_fraction=level[0], ffn_fraction=level[1], rounds=p["rounds"],
                             recover=recover, desc=desc)
        out["recovery"].update({f"{label}% round {e['round']}": e for e in log})  # curves: notebook only
        path = paths["checkpoints"] / "pruned" / f"{name}_{label}"
        prune.save_pruned(model.cpu(), tok, path, {"parent": str(src), "head_fraction": level[0],
                                                   "ffn_fraction": level[1], "hyperparameters": p})
        model.to(device)
        out["levels"].append({"name": label, "head_fraction": level[0], "ffn_fraction": level[1], "path": path,
                              "counts": prune.unit_counts(model), "params": bench.count_params(model),
                              "sparsity": 1 - prune.prunable_params(model) / base["prunable"],
                              "val": public(evaluate(model, val, device, amp, desc="val")),
                              "test": public(evaluate(model, test, device, amp, desc="test")),
                              "rounds": [_round_summary(r) for r in log], "seconds": round(time.time() - start, 1)})
    base["test"] = public(base["test"])
    return out


def recoverer(loader, val, device, p: dict, loss_fn, log_dir: Path | None, desc: str, amp: bool):
    """(model, round) -> its val macro-F1 after recovery: `recovery_epochs` of KD fine-tuning from the unpruned model
    on `loader` (it may hold unlabeled transfer rows, label -1, that only the KD term reads), best val weights kept."""
    def recover(model, r: int) -> dict:
        if not p["recovery_epochs"]:
            return {"val_macro_f1": evaluate(model, val, device, amp, desc="val")["macro_f1"]}
        res = fit(model, loader, val, device, epochs=p["recovery_epochs"], lr=p["lr"], patience=p["recovery_epochs"],
                  loss_fn=loss_fn, log_path=log_dir / f"{desc}_round{r}.csv" if log_dir else None,
                  desc=f"{desc} round {r}", amp=amp)
        return {"history": res["history"], "steps": res["steps"], "val_macro_f1": res["val"]["macro_f1"]}
    return recover


def _round_summary(entry: dict) -> dict:
    """A round for the JSON: head indices removed (original numbering), neuron counts only (they are many)."""
    return {"round": entry["round"], "heads_removed": entry["removed"]["heads"],
            "neurons_removed": [len(x) for x in entry["removed"]["neurons"]], "val_macro_f1": entry["val_macro_f1"],
            "history": entry.get("history", [])}


def measure(results: dict, texts: list[str], seq_len: int = 32, threads: int = 2, passes: int = 2, n: int = 64) -> dict:
    """Disk bytes and batch-1 latency of every base/level checkpoint, loaded back from disk with SDPA attention (as
    stage 05 and `predict` run them), timed back to back, each keeping its fastest of `passes` passes."""
    for res in results.values():
        _, tok = load_classifier(str(res["base"]["path"]))
        inputs = bench.batch1_inputs(tok, texts, seq_len=seq_len, n=n)
        entries = ([(res["base"], lambda p: load_classifier(str(p), "sdpa")[0])]
                   + [(lv, lambda p: prune.load_pruned(p, "sdpa")) for lv in res["levels"]])
        fns = {i: torch_predictor(load(e["path"])) for i, (e, load) in enumerate(entries)}
        best = bench.fastest_latency(fns, inputs, threads=threads, rounds=passes)
        for i, (e, _) in enumerate(entries):
            e["disk_bytes"], e["weight_bytes"], e["latency"] = bench.disk_bytes(e["path"]), bench.weight_bytes(e["path"]), best[i]
        for lv in res["levels"]:
            lv["speedup"] = res["base"]["latency"]["median_ms"] / lv["latency"]["median_ms"]
    return results


def judge(results: dict, gs: list, seed: int) -> None:
    """Each level's delta to its unpruned source (negative = worse): on val for the goals, on test paired with its
    95% CI, bootstrap p Holm-adjusted over every level, the word and McNemar p (reported); and the goals met."""
    for base, lv in [(res["base"], lv) for res in results.values() for lv in res["levels"]]:
        lv["val_delta_pts"] = 100 * (lv["val"]["macro_f1"] - base["val"]["macro_f1"])
        paired = stats.compare(lv["test"]["labels"], lv["test"]["preds"], base["test"]["preds"], seed=seed)
        lv.update({f"test_{k}": v for k, v in paired.items()}, goals_met=goals.all_met(gs, lv))
    stats.judge_family([lv for res in results.values() for lv in res["levels"]])  # the word: Holm over every level


def best_level(res: dict, gs: list) -> dict:
    """The level to ship, on validation: every goal met first, then within the F1 budget, then the most pruned."""
    budget = next(g for g in gs if g.name == "max_f1_drop_pts")
    return max(res["levels"], key=lambda lv: (lv["goals_met"], budget.met(lv["val_delta_pts"]), lv["sparsity"]))


def table(results: dict) -> pd.DataFrame:
    """Every model's unpruned source and levels: units kept, val and test F1 with the deltas, size, speed."""
    rows = {}
    for name, res in results.items():
        b = res["base"]
        for lv in [{"name": "0", **b, "speedup": 1.0, "sparsity": 0.0}] + res["levels"]:
            paired = (stats.delta_cell(lv["test_delta_pts"], lv["test_delta_ci_low"], lv["test_delta_ci_high"])
                      if "test_delta_pts" in lv else "")
            rows[f"{name} {lv['name']}%"] = {
                "heads": sum(lv["counts"]["heads"]), "FFN neurons": sum(lv["counts"]["neurons"]),
                "sparsity": lv["sparsity"], "val macro-F1": lv["val"]["macro_f1"], "val Δ (pts)": f"{lv['val_delta_pts']:+.2f}" if lv["sparsity"] else "",
                **ood_eval.level_cells(lv, not lv["sparsity"]),
                "test macro-F1": lv["test"]["macro_f1"], "test Δ (pts) [95% CI]": paired,
                "params (M)": lv["params"] / 1e6, "disk (MB)": lv["disk_bytes"] / 1e6,
                "latency (ms)": lv["latency"]["median_ms"], "faster than unpruned (x)": lv["speedup"],
                "goals (val)": {True: "MET", False: "NOT MET"}.get(lv.get("goals_met"), "")}
    return pd.DataFrame(rows).T


def plot_kept(results: dict):
    """Heatmaps of the share of heads and FFN neurons each layer keeps, per model and level."""
    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 5.5), squeeze=False)
    for col, (name, res) in enumerate(results.items()):
        base = res["base"]["counts"]
        for row, kind in enumerate(("heads", "neurons")):
            kept = np.array([lv["counts"][kind] for lv in res["levels"]], dtype=float)
            sns.heatmap(kept / np.array(base[kind]), annot=kept.astype(int), fmt="d", vmin=0, vmax=1, cmap="viridis",
                        ax=axes[row, col], yticklabels=[lv["name"] for lv in res["levels"]],
                        xticklabels=range(len(base[kind])), annot_kws={"fontsize": 9})
            axes[row, col].set(title=f"{name}: {kind} kept (of {base[kind][0]} per layer)", xlabel="layer",
                               ylabel="level (% removed)")
    fig.tight_layout()
    return fig


def plot_curve(results: dict, max_drop: float, min_speedup: float):
    """Val (solid, decides) and test (dashed) macro-F1, and batch-1 speed-up, against the share of prunable
    weights removed; the goals as dotted lines."""
    fig, (ax_f1, ax_sp) = plt.subplots(1, 2, figsize=(13, 3.9))
    for name, res in results.items():
        xs = [0.0] + [lv["sparsity"] for lv in res["levels"]]
        line, = ax_f1.plot(xs, [res["base"]["val"]["macro_f1"]] + [lv["val"]["macro_f1"] for lv in res["levels"]],
                           marker="o", label=f"{name} val")
        ax_f1.plot(xs, [res["base"]["test"]["macro_f1"]] + [lv["test"]["macro_f1"] for lv in res["levels"]],
                   marker="s", ls="--", color=line.get_color(), label=f"{name} test")
        ax_f1.axhline(res["base"]["val"]["macro_f1"] - max_drop / 100, ls=":", color=line.get_color(), lw=1.2,
                      label=f"{name} F1 goal (val - {max_drop} pts)")
        ax_sp.plot(xs, [1.0] + [lv["speedup"] for lv in res["levels"]], marker="o", label=name)
    ax_sp.axhline(min_speedup, ls=":", color="grey", label=f"speed goal {min_speedup}x")
    ax_f1.set(title="Macro-F1 vs sparsity", xlabel="share of prunable weights removed", ylabel="macro-F1")
    ax_sp.set(title="Batch-1 CPU speed-up vs sparsity", xlabel="share of prunable weights removed", ylabel="x faster")
    for ax in (ax_f1, ax_sp):
        legend_outside(ax)
    fig.tight_layout()
    return fig


def confusions(results: dict) -> dict:
    """Test predictions of each unpruned model and its levels, for a grid of confusion matrices."""
    out = {}
    for name, res in results.items():
        out[f"{name} unpruned"] = res["base"]["test"]
        out.update({f"{name} {lv['name']}%": lv["test"] for lv in res["levels"]})
    return out


def headline(results: dict, chosen: dict) -> dict:
    """Each model's chosen level: its test F1, the paired test delta to the unpruned source, speed-up."""
    out = {}
    for name, res in results.items():
        lv = chosen[name]
        out[f"{name} chosen level"] = f"{lv['name']}%"
        out[f"{name} unpruned test macro-F1"] = res["base"]["test"]["macro_f1"]
        out[f"{name} {lv['name']}% pruned test macro-F1"] = lv["test"]["macro_f1"]
        out[f"{name} {lv['name']}% test Δ (points)"] = lv["test_delta_pts"]
        out[f"{name} {lv['name']}% batch-1 speedup"] = lv["speedup"]
    return out


def verdict(results: dict, chosen: dict, checks: list[dict]) -> str:
    """The goals of each model's chosen level, then what each level costs and buys (stage 05 picks among all)."""
    lines = goals.lines(checks)
    for name, res in results.items():
        lv, base = chosen[name], res["base"]
        lines.append(f"* **{name}**: level {lv['name']}% chosen on val ({'goals MET' if lv['goals_met'] else 'goals NOT met'}"
                     f"; val {lv['val_delta_pts']:+.2f} points vs unpruned): test macro-F1 {lv['test']['macro_f1']:.4f}, "
                     f"{stats.delta_text(lv, 'its unpruned source', 'test_')}; {lv['params'] / base['params']:.0%} of "
                     f"the parameters, {lv['speedup']:.2f}x faster at batch 1.")
        strongest = res["levels"][-1]
        if strongest is not lv:
            lines.append(f"  The strongest level, {strongest['name']}%, reads val {strongest['val_delta_pts']:+.2f} points"
                         f" and is {strongest['speedup']:.2f}x faster.")
    lines.append("* Stage 05 benchmarks every level, alone and stacked with INT8, and makes the shipping choice.")
    return "\n".join(lines)


def metrics(results: dict, root: Path) -> dict:
    """The JSON form of the results (paths relative to out_dir)."""
    def rel(e):
        return {**e, "path": relative_path(e["path"], root)}
    return {name: {"base": rel(res["base"]), "levels": [rel(lv) for lv in res["levels"]]} for name, res in results.items()}
