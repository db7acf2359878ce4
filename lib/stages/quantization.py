"""Stage 03: every INT8 variant of the teacher and the best student, each measured against its FP32 source."""
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from lib import formats
from lib.core import goals, seeds, stats
from lib.core.errors import FinCompressError
from lib.core.files import relative_path
from lib.core.variants import Variant
from lib.data.batching import make_loader
from lib.data.corpus import load_splits
from lib.measure import bench, ood_eval
from lib.modeling.device import quiet, set_seed
from lib.modeling.distributed import rank0_only
from lib.modeling.train import fit
from lib.report import int8, plots
from lib.runtime.pytorch import torch_predictor
from lib.stages.base import Stage as BaseStage
from lib.techniques import quantize as q, quantize_static as qs, sensitivity as sens
from lib.techniques.onnx_export import calibration_study, save_onnx_fp32, save_onnx_int8


class Stage(BaseStage):
    NAME = "03_quantization"
    STEPS = ("pick_models", "quantize_teacher", "quantize_student")

    def pick_models(self) -> list[Variant]:
        """The FP32 sources: stage 01's teacher and stage 02's best student (or student_dir)."""
        found = self.sources(self.p.student_dir)
        self.models = [found["teacher"]]
        if "student" in found:  # a student folder that happens to be called teacher must not clash with it
            v = found["student"]
            self.models.append(replace(v, name="student") if v.name == "teacher" else v)
        self.results = []
        return self.models

    def describe(self) -> str:
        return ", ".join(f"**{v.name}**: `{v.path}`" for v in self.models)

    def quantize_teacher(self) -> dict:
        self.results.append(quantize_model(self.models[0], self.paths, self.device, self.params))
        return self.results[-1]

    def quantize_student(self) -> dict | None:
        for v in self.models[1:]:  # none with student_dir = none
            self.results.append(quantize_model(v, self.paths, self.device, self.params))
        family = stats.judge_family([v.metrics for r in self.results for v in r["variants"]])  # last: family complete
        self.results = [r | {"holm_family": family} for r in self.results]
        return self.results[-1] if len(self.models) > 1 else None

    def seed_runs(self) -> tuple[dict[str, list[dict]], dict[str, int]]:
        """Every model over its training seeds: a student's FP32 seeds and each PTQ variant made from them, each QAT
        variant's own seeds; (runs by row label, the seed each row exports)."""
        runs, exported = {}, {}
        for r in self.results:
            if r["fp32_seed_runs"]:  # the student's: it exports its stage-02 seed, as its PTQ variants do
                runs[f"{r['name']} (FP32 torch)"] = r["fp32_seed_runs"]
                exported[f"{r['name']} (FP32 torch)"] = r["by_method"]["onnx_fp32"].metrics["seed"]
            for v in (v for v in r["variants"] if "seed_runs" in v.metrics):
                runs[v.name], exported[v.name] = v.metrics["seed_runs"], v.metrics["seed"]
        return runs, exported

    def seed_table(self) -> pd.DataFrame:
        return plots.seed_table(*self.seed_runs())

    def plot_seeds(self):
        """Val, test and OOD-val macro-F1 of each model over its seeds, a dot per seed, beside its FP32 source."""
        runs = {}
        for role, r in zip(("teacher", "student"), self.results):  # pick_models' order; the names are long
            trained = {m: v.metrics["seed_runs"] for m, v in r["by_method"].items() if "seed_runs" in v.metrics}
            one = {"seed": self.p.seed, **{f"{k}_macro_f1": r["fp32"][k]["macro_f1"] for k in ("val", "test", "ood_val")
                                           if k in r["fp32"]}}
            runs[f"{role}\nFP32"] = r["fp32_seed_runs"] or [one]
            runs |= {f"{role}\n{int8.LABELS[m]}": rs for m, rs in trained.items()}
        student = f"; student = {self.results[1]['name']}" if len(self.results) > 1 else ""
        return plots.plot_seed_f1(runs, f"Over training seeds, beside the FP32 source{student}")

    def stage_goals(self) -> list[goals.Goal]:
        return goals.from_params(self.params, ref="its FP32 source")

    def outcome(self) -> dict:
        gs, checks = self.stage_goals(), []
        for r in self.results:  # each model is judged by the INT8 variant it would ship
            best = int8.best_int8(r, gs)
            checks += goals.check_all(gs, best.metrics, best.name, {"val_delta_pts": best.metrics.get("val_delta_pts_per_seed")})
        return {"metrics": {"models": [int8.json_view(r) for r in self.results]}, "goals": checks,
                "headline": int8.headline(self.results, gs), "verdict": int8.verdict(self.results, gs, checks),
                "variants": [v for r in self.results for v in r["variants"]]}


def load_fp32(source: Variant, root: Path):
    """The FP32 source exactly as the benchmark loads it (the format registry, default attention), in eval mode."""
    path = source.location(root)
    if not (path / "config.json").is_file():
        raise FinCompressError(f"{path} is not a model folder (no config.json); run the stage that writes it first")
    with quiet():
        model = formats.load_torch(source, root)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def fp32_reference(model, src: Path, root: Path, val, test, lat_inputs, threads: int) -> dict:
    """The FP32 PyTorch model every variant is compared with: F1, logits, size and latency."""
    predict = torch_predictor(model)
    return {"path": relative_path(src, root), "params": bench.count_params(model), "disk_bytes": bench.disk_bytes(src),
            "weight_bytes": bench.weight_bytes(src), "val": sens.evaluate_predictor(predict, val),
            "test": sens.evaluate_predictor(predict, test),
            "latency": bench.latency_ms(predict, lat_inputs, threads=threads)}


def measure(variant: Variant, path: Path, predict, lat_inputs, evals: dict, fp32: dict, p: dict) -> Variant:
    """One saved variant against its FP32 source: val F1 (the goals), test F1 with its paired delta, size, latency."""
    lat = bench.latency_ms(predict, lat_inputs, threads=p["threads"])
    val, test = evals["val"], evals["test"]
    paired = stats.compare(test["labels"], test["preds"], fp32["test"]["preds"], seed=p["seed"])
    m = dict(val_macro_f1=val["macro_f1"], test_macro_f1=test["macro_f1"], fp32_val_macro_f1=fp32["val"]["macro_f1"],
             fp32_test_macro_f1=fp32["test"]["macro_f1"], val_delta_pts=100 * (val["macro_f1"] - fp32["val"]["macro_f1"]),
             **{f"test_{k}": x for k, x in paired.items()},
             **ood_eval.ood_fields(evals.get("ood_val"), fp32.get("ood_val"), p["seed"]),
             params=fp32["params"], disk_bytes=bench.disk_bytes(path),
             weight_bytes=bench.weight_bytes(path), latency_ms=lat["median_ms"], latency=lat,
             speedup=fp32["latency"]["median_ms"] / lat["median_ms"],
             size_ratio=fp32["disk_bytes"] / bench.disk_bytes(path), **test["vs_fp32"])
    return variant.with_metrics(**m, goals_met=goals.all_met(goals.from_params(p, ref="its FP32 source"), m))


# What each saved folder is: (format, techniques added to its source, precision), by the method that made it.
MADE = {"torch_int8": ("torch_int8", "torch_int8", "int8"), "onnx_fp32": ("onnx", ("onnx_export",), "fp32"),
        "onnx_int8": ("onnx", ("onnx_export", "onnx_int8"), "int8"), "qat_int8": ("torch_int8", "qat_int8", "int8"),
        "onnx_static_int8": ("onnx", ("onnx_export", "onnx_static_int8"), "int8")}


def saved_variant(source: Variant, method: str, path, root: Path) -> Variant:
    """The record of the folder `method` saved from `source` (MADE says what it is)."""
    fmt, technique, precision = MADE[method]
    return source.derive(Path(path).name, fmt, relative_path(Path(path), root), technique, Stage.NAME, precision)


def judged_on_seeds(v: Variant, seed: int, runs: list[dict], deltas: list[float], p: dict) -> Variant:
    """`v` with its training seeds' records (`seed` exported), its val Δ the mean of `deltas` and its goals judged on
    that mean."""
    m = {"seed": seed, "seed_runs": runs, "val_delta_pts": statistics.fmean(deltas), "val_delta_pts_per_seed": deltas}
    return v.with_metrics(**m, goals_met=goals.all_met(goals.from_params(p, ref="its FP32 source"), v.metrics | m))


def measure_saved(source: Variant, saved: dict, root: Path, loaders: dict, lat_inputs, fp32: dict, p: dict) -> tuple:
    """Each saved folder reloaded through the format registry (what ships is scored): (variants by method, evals)."""
    by_method, evals = {}, {}
    for method in MADE:
        path = Path(saved[method])
        v = saved_variant(source, method, path, root)
        predict, _ = formats.load(v, root, p["threads"])
        scored = {s: sens.evaluate_predictor(predict, loaders[s], fp32[s]["logits"]) for s in loaders}
        evals[v.name] = scored["test"]
        by_method[method] = measure(v, path, predict, lat_inputs, scored, fp32, p)
    return by_method, evals


def quantize_model(source: Variant, paths: dict, device, p: dict) -> dict:
    """PTQ (torch), ONNX FP32/INT8 and QAT INT8 of one model, each saved, reloaded from disk and measured. Under
    a launcher rank 0 alone does the CPU-only INT8 work and the CPU timing; QAT trains data-parallel on every rank."""
    (model, tokenizer), splits = load_fp32(source, paths["root"]), load_splits(paths["data"])
    val, test = (make_loader(splits[s], tokenizer, 64, p["max_length"]) for s in ("val", "test"))
    texts = splits["test"]["text"].astype(str).tolist()
    lat_inputs = bench.batch1_inputs(tokenizer, texts, seq_len=p["latency_seq_len"], n=p["latency_n"])
    # OOD-val: reported beside val for every variant (never chosen on); absent without stage 01's OOD sets
    ood = ood_eval.fp32_ood(torch_predictor(model), paths["data"], tokenizer, p["max_length"], sens.evaluate_predictor)
    ptq = rank0_only(post_training, source, model, tokenizer, paths, val, texts, test, lat_inputs, p,
                     splits["train"]["text"].astype(str).tolist())
    ptq["fp32"] |= {"ood_val": ood["ood_val"]} if ood else {}
    qats = {s: train_qat(source.name, model, tokenizer, splits, ptq["meta"]["keep_fp32"], device, p, s)
            for s in seeds.training_seeds(p["seed"], p["seeds"])}
    by_method, evals, qat, fp32_runs = rank0_only(save_and_measure, source, qats, model.config, tokenizer, paths,
                                       {"val": val, "test": test} | ({"ood_val": ood["ood_loader"]} if ood else {}),
                                       lat_inputs, ptq, p)
    qat["reference"] = ("FP32 val", ptq["fp32"]["val"]["macro_f1"])  # its curve's dashed line; not in the JSON
    return {"name": source.name, **{k: v for k, v in ptq.items() if k not in ("meta", "saved", "twins")}, "qat_history": qat["history"],
            "qat": qat, "variants": list(by_method.values()), "by_method": by_method, "evals": evals,
            "fp32_seed_runs": fp32_runs}


def train_qat(name, model, tokenizer, splits, keep_mods, device, p: dict, seed: int) -> tuple:
    """QAT with one training seed: a short fine-tuning at a low learning rate (bf16 autocast under --gpu);
    (INT8 model, {history, steps})."""
    def finetune(fake):
        train = make_loader(splits["train"], tokenizer, 32, p["max_length"], shuffle=True, seed=seed)
        val = make_loader(splits["val"], tokenizer, 64, p["max_length"])
        run = fit(fake, train, val, device, epochs=p["qat_epochs"], lr=p["qat_lr"], patience=1,
                  desc=f"{name} QAT seed {seed}", amp=bool(p.get("gpu")))
        return {"history": run["history"], "steps": run["steps"]}
    set_seed(seed)  # the same shuffles and dropout however many random draws the stage made before
    return q.qat(model, keep_mods, p["per_channel"], finetune)


def post_training(source: Variant, model, tokenizer, paths: dict, val, texts, test, lat_inputs, p: dict, train_texts) -> dict:
    """The FP32 reference, the sensitivity scan, the FP32 groups each runtime keeps, PTQ INT8 and ONNX FP32/INT8
    (dynamic, and static calibrated on `calibration_n` training sentences by the method best on val), saved; the
    same recipe on each other training seed's model (seed_recipes), the calibration chosen on the seeds' mean val."""
    name, root, src = source.name, paths["root"], source.location(paths["root"])
    fp32 = fp32_reference(model, src, root, val, test, lat_inputs, p["threads"])
    ref_f1, ref_logits = fp32["val"]["macro_f1"], fp32["val"]["logits"]
    scan = sens.sensitivity(model, val, ref_f1, ref_logits, p["per_channel"])
    keep, val_delta = sens.choose_fp32_groups(model, val, ref_f1, scan, p["per_channel"], p["max_f1_drop_pts"])
    keep_mods, qdir = q.modules_in(model, keep), paths["checkpoints"] / "quantized"
    meta = {"source": fp32["path"], "keep_fp32_groups": keep, "keep_fp32": keep_mods, "per_channel": p["per_channel"]}
    saved = {"torch_int8": qdir / f"{name}_torch_int8"}
    q.save_torch_int8(q.quantize_torch(model, keep_mods, p["per_channel"]), model.config, tokenizer,
                      saved["torch_int8"], meta | {"method": "ptq_dynamic"})
    # One FP32 export serves the ONNX FP32-group choice and the saved INT8 variant.
    fp32_dir, parity = save_onnx_fp32(name, model, tokenizer, texts[:8], qdir, p["parity_tol"])
    onnx_keep, onnx_val_delta = sens.choose_onnx_fp32_groups(model, tokenizer, fp32_dir, val, ref_f1, scan,
                                                            p["max_f1_drop_pts"])
    saved |= {"onnx_fp32": fp32_dir, "onnx_int8": save_onnx_int8(name, fp32_dir, tokenizer, qdir, q.modules_in(model, onnx_keep))}
    twins = seed_recipes(source, tokenizer, qdir, root, meta, q.modules_in(model, onnx_keep), texts, p)
    feeds = qs.calibration_inputs(tokenizer, train_texts, n=p["calibration_n"], max_length=p["max_length"], seed=p["seed"])
    graphs = {name: fp32_dir} | {t["variant"].name: t["saved"]["onnx_fp32"] for t in twins.values()}
    static = calibration_study(graphs, tokenizer, qdir, q.modules_in(model, onnx_keep), feeds, {"val": val, "test": test})
    for t in twins.values():
        t["saved"]["onnx_static_int8"] = static["paths"][t["variant"].name]
    return {"onnx_static_calibration": static["calibration"], "onnx_static_scores": static["scores"], "onnx_ops": static["ops"],
            "fp32": fp32, "sensitivity": scan, "keep_fp32_groups": keep, "val_delta_pts_with_keep": val_delta,
            "onnx_keep_fp32_groups": onnx_keep, "onnx_val_delta_pts_with_keep": onnx_val_delta, "onnx_parity": parity,
            "onnx_static_per_seed": static["per_model"], "meta": meta, "twins": twins,
            "saved": saved | {"onnx_static_int8": static["paths"][name]}}


def save_and_measure(source: Variant, qats: dict, config, tokenizer, paths: dict, loaders: dict, lat_inputs, ptq: dict,
                     p: dict) -> tuple[dict, dict, dict]:
    """Save every seed's QAT INT8 (the median seed on val as <model>_qat_int8, the others by seed), reload and measure
    every saved variant; (variants by method, test evals, the exported seed's QAT curve). The ONNX INT8 variants
    carry what stage 06 reuses; the QAT one its seeds, judged on their mean val delta."""
    name, qdir, fp32 = source.name, paths["checkpoints"] / "quantized", ptq["fp32"]
    runs = {s: {"seed": s, **{f"{k}_macro_f1": sens.evaluate_predictor(torch_predictor(m), loaders[k], fp32[k]["logits"])
                              ["macro_f1"] for k in loaders}} for s, (m, _) in qats.items()}
    chosen = seeds.median_run(list(runs.values()))["seed"]
    for s, (m, _) in qats.items():
        runs[s]["path"] = qdir / seeds.folder_name(f"{name}_qat_int8", s, chosen)
        q.save_torch_int8(m, config, tokenizer, runs[s]["path"], ptq["meta"] | {"method": "qat", "seed": s,
                                                                                "exported_seed": chosen})
        runs[s]["path"] = relative_path(runs[s]["path"], paths["root"])
    saved = ptq["saved"] | {"qat_int8": qdir / f"{name}_qat_int8"}
    by_method, evals = measure_saved(source, saved, paths["root"], loaders, lat_inputs, fp32, p)
    by_method["qat_int8"] = judged_on_seeds(by_method["qat_int8"], chosen, list(runs.values()),
                                            seeds.val_deltas(list(runs.values()), fp32["val"]["macro_f1"]), p)
    by_method["onnx_int8"] = by_method["onnx_int8"].with_metrics(keep_fp32_groups=ptq["onnx_keep_fp32_groups"])
    by_method["onnx_static_int8"] = by_method["onnx_static_int8"].with_metrics(calibration=ptq["onnx_static_calibration"])
    by_method, fp32_runs = with_seed_runs(by_method, source, ptq, loaders, paths["root"], p)
    return by_method, evals, qats[chosen][1], fp32_runs


def seed_recipes(source: Variant, tokenizer, qdir: Path, root: Path, meta: dict, onnx_keep: list, texts, p: dict) -> dict:
    """The exported model's PTQ recipe (its FP32 groups in each runtime) on each other training seed's FP32 model
    (stage 02's seed_runs): {seed: {"variant", "saved": {method: folder}}}; empty for a one-seed source."""
    out = {}
    for twin in seeds.twins(source):
        model, s = load_fp32(twin, root)[0], twin.metrics["seed"]
        saved = {"torch_int8": qdir / f"{twin.name}_torch_int8"}
        q.save_torch_int8(q.quantize_torch(model, meta["keep_fp32"], p["per_channel"]), model.config, tokenizer,
                          saved["torch_int8"], meta | {"source": twin.path, "method": "ptq_dynamic", "seed": s})
        fp32_dir, _ = save_onnx_fp32(twin.name, model, tokenizer, texts[:8], qdir, p["parity_tol"])
        saved |= {"onnx_fp32": fp32_dir, "onnx_int8": save_onnx_int8(twin.name, fp32_dir, tokenizer, qdir, onnx_keep)}
        out[s] = {"variant": twin, "saved": saved}
    return out


def with_seed_runs(by_method: dict, source: Variant, ptq: dict, loaders: dict, root: Path, p: dict) -> tuple[dict, list]:
    """Each PTQ variant with its seed_runs: the exported seed's figures, then its recipe's on each other seed's model;
    its val Δ becomes the mean over seeds of each seed's INT8 minus that seed's FP32. (variants, FP32 seed runs)."""
    if not ptq["twins"]:
        return by_method, []
    def scores(predict) -> dict:
        return {f"{k}_macro_f1": sens.evaluate_predictor(predict, loaders[k])["macro_f1"] for k in loaders}
    first = source.metrics["seed"]
    fp32_runs = [{"seed": first, **{f"{k}_macro_f1": ptq["fp32"][k]["macro_f1"] for k in loaders}}]
    fp32_runs += [{"seed": s, **scores(torch_predictor(load_fp32(t["variant"], root)[0]))} for s, t in ptq["twins"].items()]
    fp32_runs.sort(key=lambda r: r["seed"])
    for method in ptq["saved"]:  # the post-training recipes, each built from every seed
        v, runs = by_method[method], []
        for s, t in ptq["twins"].items():
            twin = saved_variant(t["variant"], method, t["saved"][method], root)
            runs.append({"seed": s, "path": twin.path, **scores(formats.load(twin, root, p["threads"])[0])})
        runs = sorted([{"seed": first, "path": v.path, **{f"{k}_macro_f1": v.metrics[f"{k}_macro_f1"] for k in loaders}}]
                      + runs, key=lambda r: r["seed"])
        deltas = [100 * (r["val_macro_f1"] - f["val_macro_f1"]) for r, f in zip(runs, fp32_runs)]  # both by seed
        by_method[method] = judged_on_seeds(v, first, runs, deltas, p)
    return by_method, fp32_runs
