"""Stage 04: the teacher and the best student pruned level by level (heads and FFN neurons), KD recovery, timing."""
import copy
import statistics
import time
from pathlib import Path

import pandas as pd

from lib.core import goals, seeds, stats
from lib.core.errors import FinCompressError
from lib.core.files import relative_path
from lib.core.params import percent, sparsities
from lib.core.variants import Variant
from lib.data.batching import make_loader
from lib.data.corpus import load_splits, load_transfer
from lib.measure import bench, ood_eval
from lib.modeling.device import set_seed
from lib.modeling.distributed import rank0_only
from lib.modeling.losses import precomputed_kd_loss
from lib.modeling.train import attention_for, evaluate, fit, load_classifier, logits_over, public
from lib.runtime.pytorch import torch_predictor
from lib.report import levels, plots
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
        """Each model pruned level by level once per training seed; per level the median seed on val is exported."""
        chain_seeds = seeds.training_seeds(self.p.seed, self.p.seeds)
        self.results = {}
        for role, v in self.models.items():
            shared = unpruned(v, self.paths, self.device, self.params)
            self.results[role] = export_levels({s: prune_model(role, shared, self.paths, self.device, self.levels,
                                                               self.params, s) for s in chain_seeds}, self.paths, self.params)
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
        ood_eval.score_pruned(self.results, self.paths["data"], p.max_length, self.device, p.seed,
                              self.paths["root"])  # reported only
        judge(self.results, self.stage_goals(), p.seed)
        return levels.table(self.results)

    def seed_table(self) -> pd.DataFrame:
        """Each level's spread over its seeds and the seed exported."""
        return plots.seed_table(levels.seed_runs(self.results))

    def plot_seeds(self):
        """Val, test and OOD-val macro-F1 of each level, a dot per seed, beside its unpruned source (one model)."""
        runs = {}
        for name, res in self.results.items():
            b = res["base"]
            runs[f"{name} unpruned"] = [{"seed": self.p.seed, "val_macro_f1": b["val"]["macro_f1"],
                                         "test_macro_f1": b["test"]["macro_f1"], "ood_val_macro_f1": b.get("ood_val_macro_f1")}]
            runs |= levels.seed_runs({name: res})
        return plots.plot_seed_f1(runs, "Pruned levels over their training seeds, beside the unpruned source")

    def stage_goals(self) -> list:
        return goals.from_params(self.params, ref="its unpruned source")

    def chosen(self) -> dict:
        """The level each model would ship, chosen on validation."""
        return {role: best_level(res, self.stage_goals()) for role, res in self.results.items()}

    def goal_checks(self) -> list[dict]:
        return [c for role, lv in self.chosen().items()
                for c in goals.check_all(self.stage_goals(), lv, f"{role}_pruned_{lv['name']}",
                                         {"val_delta_pts": lv["val_delta_pts_per_seed"]})]

    def outcome(self) -> dict:
        root = self.paths["root"]
        variants = [self.models[role].derive(f"{role}_pruned_{lv['name']}", "pruned", relative_path(lv["path"], root),
                                             "prune", self.NAME, test_macro_f1=lv["test"]["macro_f1"],
                                             val_macro_f1=lv["val"]["macro_f1"], params=lv["params"],
                                             disk_bytes=lv["disk_bytes"], latency_ms=lv["latency"]["median_ms"],
                                             head_fraction=lv["head_fraction"], ffn_fraction=lv["ffn_fraction"],
                                             seed=lv["seed"], seed_runs=lv["runs"])
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


def unpruned(source: Variant, paths: dict, device, p: dict) -> dict:
    """What every seed's chain of one model shares, computed once: the splits, the unpruned model's figures, and its
    logits on the recovery set (it is the KD teacher of every recovery round; they are fixed)."""
    splits, src = load_splits(paths["data"]), source.location(paths["root"])
    model, tok = load_classifier(str(src), attention_for(device, maps=p["importance"] == "entropy"))
    model.to(device)
    # recovery KD also reads the unlabeled transfer sentences (label -1: the teacher's soft labels only)
    kd_df = (pd.concat([splits["train"], load_transfer(paths["data"])], ignore_index=True) if p["transfer"]
             else splits["train"])
    test = make_loader(splits["test"], tok, 64, p["max_length"])
    base = {"path": src, "params": bench.count_params(model), "prunable": prune.prunable_params(model),
            "test": public(evaluate(model, test, device, p["gpu"], desc="test")), "counts": prune.unit_counts(model)}
    kd_logits = logits_over(model, make_loader(kd_df, tok, 64, p["max_length"]), device, p["gpu"], desc="kd targets")
    return {"base": base, "kd_df": kd_df, "kd_logits": kd_logits["logits"], "splits": splits}


def prune_model(name: str, shared: dict, paths: dict, device, levels: list, p: dict, seed: int) -> dict:
    """Prune one checkpoint (`shared`: its unpruned() figures) level by level (each continues the previous) with one
    training seed (batches drawn for the importance, recovery shuffles and dropout); each level tested and kept in
    memory (`model`, on the CPU)."""
    set_seed(seed)  # each chain the same whatever ran before it
    splits, base, amp = shared["splits"], shared["base"], p["gpu"]
    model, tok = load_classifier(str(base["path"]), attention_for(device, maps=p["importance"] == "entropy"))
    model.to(device)

    def loader(df, bs, shuffle=False):
        return make_loader(df, tok, bs, p["max_length"], shuffle=shuffle, seed=seed)
    train, val, test = loader(splits["train"], p["batch_size"], True), loader(splits["val"], 64), loader(splits["test"], 64)
    # kept on the device, where each recovery batch looks its rows up without a trip to the host
    loss_fn = precomputed_kd_loss(shared["kd_logits"].to(device), p["alpha"], p["temperature"])
    out = {"name": name, "base": base, "levels": [], "recovery": {}, "tokenizer": tok}
    importance = prune.IMPORTANCE[p["importance"]](train, device, p["importance_batches"], amp)  # gold labels only
    for level in levels:
        start, label, desc = time.time(), level_name(level), f"prune_{name}_{level_name(level)}_seed{seed}"
        recover = recoverer(loader(shared["kd_df"], p["batch_size"], True), val, device, p, loss_fn, paths["logs"], desc, amp)
        log = prune.prune_to(model, importance, head_fraction=level[0], ffn_fraction=level[1], rounds=p["rounds"],
                             recover=recover, desc=desc)
        out["recovery"].update({f"{label}% round {e['round']}": e for e in log})  # curves: notebook only
        out["levels"].append({"name": label, "head_fraction": level[0], "ffn_fraction": level[1], "seed": seed,
                              "model": copy.deepcopy(model).cpu(), "counts": prune.unit_counts(model),
                              "params": bench.count_params(model),
                              "sparsity": 1 - prune.prunable_params(model) / base["prunable"],
                              "val": public(evaluate(model, val, device, amp, desc="val")),
                              "test": public(evaluate(model, test, device, amp, desc="test")),
                              "rounds": [_round_summary(r) for r in log], "seconds": round(time.time() - start, 1)})
    return out


def export_levels(chains: dict[int, dict], paths: dict, p: dict) -> dict:
    """One model's seed chains (seed -> prune_model's result) saved and folded into one result: per level every
    seed's checkpoint and record, and the median seed on val exported (checkpoints/pruned/<model>_<level>)."""
    first = next(iter(chains.values()))
    out = {"name": first["name"], "base": first["base"], "levels": [], "recovery": {}}
    for i, level in enumerate(first["levels"]):
        runs = {s: chain["levels"][i] for s, chain in chains.items()}
        chosen = seeds.median_run([{"seed": s, "val_macro_f1": lv["val"]["macro_f1"]} for s, lv in runs.items()])["seed"]
        for s, lv in runs.items():
            lv["path"] = paths["checkpoints"] / "pruned" / seeds.folder_name(f"{first['name']}_{lv['name']}", s, chosen)
            prune.save_pruned(lv.pop("model"), first["tokenizer"], lv["path"],
                              {"parent": str(first["base"]["path"]), "head_fraction": level["head_fraction"],
                               "ffn_fraction": level["ffn_fraction"], "seed": s, "exported_seed": chosen,
                               "hyperparameters": p})
        out["levels"].append({**runs[chosen], "runs": [seed_record(lv, paths["root"]) for lv in runs.values()]})
        out["recovery"].update({k: e for k, e in chains[chosen]["recovery"].items() if k.startswith(f"{level['name']}% ")})
    return out


def seed_record(level: dict, root: Path) -> dict:
    """One seed's level for the JSON: its seed, val and test macro-F1, units kept, checkpoint."""
    return {"seed": level["seed"], "val_macro_f1": level["val"]["macro_f1"], "test_macro_f1": level["test"]["macro_f1"],
            "heads": sum(level["counts"]["heads"]), "ffn_neurons": sum(level["counts"]["neurons"]),
            "path": relative_path(level["path"], root)}


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
    """Each level's delta to its unpruned source (negative = worse): on val, the mean over its seeds, for the goals; on
    test, its exported seed's, paired with its 95% CI, bootstrap p Holm-adjusted over every level, the word and
    McNemar p (reported); and the goals met."""
    for base, lv in [(res["base"], lv) for res in results.values() for lv in res["levels"]]:
        lv["val_delta_pts_per_seed"] = seeds.val_deltas(lv["runs"], base["val"]["macro_f1"])
        lv["val_delta_pts"] = statistics.fmean(lv["val_delta_pts_per_seed"])
        paired = stats.compare(lv["test"]["labels"], lv["test"]["preds"], base["test"]["preds"], seed=seed)
        lv.update({f"test_{k}": v for k, v in paired.items()}, goals_met=goals.all_met(gs, lv))
    stats.judge_family([lv for res in results.values() for lv in res["levels"]])  # the word: Holm over every level


def best_level(res: dict, gs: list) -> dict:
    """The level to ship, on validation: every goal met first, then within the F1 budget, then the most pruned."""
    budget = next(g for g in gs if g.name == "max_f1_drop_pts")
    return max(res["levels"], key=lambda lv: (lv["goals_met"], budget.met(lv["val_delta_pts"]), lv["sparsity"]))


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
    lines.append(levels.seeds_line(results))
    lines.append("* Stage 05 benchmarks every level, alone and stacked with INT8, and makes the shipping choice.")
    return "\n".join(lines)


def metrics(results: dict, root: Path) -> dict:
    """The JSON form of the results (paths relative to out_dir)."""
    def rel(e):
        return {**e, "path": relative_path(e["path"], root)}
    return {name: {"base": rel(res["base"]), "levels": [rel(lv) for lv in res["levels"]]} for name, res in results.items()}
