"""Stage 02: three students cut from the teacher (no teacher, vanilla KD, intermediate KD), compared and timed."""
import statistics
import time

import pandas as pd

from lib.core import goals, pipeline, seeds, stats
from lib.core.errors import FinCompressError
from lib.core.files import relative_path
from lib.core.textnorm import normalize_texts
from lib.core.variants import LABELS
from lib.data.batching import make_loader
from lib.data.corpus import load_splits, load_transfer
from lib.data.ood import load_tweet_pool
from lib.measure import bench, harness, ood_eval
from lib.modeling.device import set_seed
from lib.modeling.distributed import rank0_only
from lib.modeling.losses import precomputed_kd_loss
from lib.modeling.train import attention_for, evaluate, fit, load_classifier, public, save_checkpoint
from lib.report import plots
from lib.stages.base import Stage as BaseStage
from lib.techniques.distill import (build_student, intermediate_loss_fn, layer_map, resolve_student_layers,
                                    teacher_targets)

KINDS = ("baseline", "kd_vanilla", "kd_intermediate")


class Stage(BaseStage):
    NAME = "02_distillation"
    STEPS = ("setup", "train_baseline", "train_kd_vanilla", "train_kd_intermediate", "compare", "measure")

    def setup(self) -> None:
        """Teacher, splits, loaders, the teacher's own val/test scores and its training-set logits."""
        p, device = self.p, self.device
        self.teacher_variant = self.sources("none")["teacher"]
        self.teacher_dir = self.teacher_variant.location(self.paths["root"])
        self.target_f1 = self.result_of(pipeline.SOURCE).metrics["target_f1"]
        self.splits = load_splits(self.paths["data"])
        # eager: intermediate KD reads the teacher's attention maps (SDPA returns none)
        self.teacher, self.tokenizer = load_classifier(str(self.teacher_dir), attention_for(device, maps=True))
        self.teacher.to(device).eval()
        self.teacher_layers = n = self.teacher.config.num_hidden_layers
        self.student_layers = k = resolve_student_layers(n, p.student_layers)
        self.layer_map = layer_map(n, k)
        self.val_loader = make_loader(self.splits["val"], self.tokenizer, p.batch_size * 2, p.max_length)
        self.test_loader = make_loader(self.splits["test"], self.tokenizer, p.batch_size * 2, p.max_length)
        # KD students also learn from the unlabeled transfer sentences, appended after the labeled ones
        parts = [self.splits["train"], load_transfer(self.paths["data"])] if p.transfer else [self.splits["train"]]
        self.tweets = self.tweet_transfer() if p.transfer_tweets else parts[0].iloc[:0]
        self.kd_train = pd.concat(parts + [self.tweets], ignore_index=True)
        # unshuffled, so row i of the logits is training sentence i, the idx every batch carries
        ordered = make_loader(self.kd_train, self.tokenizer, p.batch_size * 2, p.max_length)
        # one teacher pass: its logits (every KD student) and its internals (intermediate KD), by training row
        self.internals = teacher_targets(self.teacher, ordered, self.layer_map, device, p.gpu)
        self.teacher_logits = self.internals.pop("logits").to(device)
        self.teacher_val = evaluate(self.teacher, self.val_loader, device, p.gpu, desc="teacher val")
        self.teacher_test = evaluate(self.teacher, self.test_loader, device, p.gpu, desc="teacher test")
        # reported beside val only (never chosen on); None when stage 01 wrote no OOD sets
        self.ood_loader = ood_eval.ood_val_loader(self.paths["data"], self.tokenizer, p.batch_size * 2, p.max_length)
        self.teacher_ood = self.score_ood(self.teacher, "teacher")
        self.results = {}

    def score_ood(self, model, name: str) -> dict | None:
        """The model on OOD-val with the same evaluate as val; None without OOD sets."""
        if self.ood_loader is None:
            return None
        return evaluate(model, self.ood_loader, self.device, self.p.gpu, desc=f"{name} ood_val")

    def tweet_transfer(self):
        """The unlabeled tweet pool as transfer rows (label -1: the teacher's soft labels only, never a gold one),
        in stage 01's text normalization (idempotent, so a pool written normalized is unchanged)."""
        mode = self.result_of(pipeline.SOURCE).metrics["data"].get("text_normalization", "none")
        texts = normalize_texts(load_tweet_pool(self.paths["data"]), mode)
        return pd.DataFrame({"text": texts, "label": -1, "source": "tweet_pool"})

    def describe(self) -> str:
        return (f"Teacher: {self.teacher_layers} layers, val macro-F1 {self.teacher_val['macro_f1']:.4f}, test "
                f"{self.teacher_test['macro_f1']:.4f}. Student: {self.student_layers} layers, copied from teacher "
                f"layers {self.layer_map} (0-based). KD training set: {len(self.splits['train'])} labeled + "
                f"{len(self.kd_train) - len(self.splits['train'])} unlabeled transfer sentences ({len(self.tweets)} of them "
                "from the tweet pool).")

    def train_baseline(self) -> dict:
        return self.train("baseline")

    def train_kd_vanilla(self) -> dict:
        return self.train("kd_vanilla")

    def train_kd_intermediate(self) -> dict:
        return self.train("kd_intermediate")

    def train(self, kind: str) -> dict:
        """One student kind (see KINDS) for every training seed; each seed's model is saved, and the median seed on
        val is the one later stages read (checkpoints/student_<kind>; the others beside it, named by seed)."""
        if kind not in KINDS:
            raise FinCompressError(f"unknown student kind {kind!r}; use one of {', '.join(KINDS)}")
        runs = {s: self.train_seed(kind, s) for s in seeds.training_seeds(self.p.seed, self.p.seeds)}
        records = [r["record"] for r in runs.values()]
        chosen = seeds.median_run(records)["seed"]
        for s, run in runs.items():
            run["path"] = self.paths["checkpoints"] / seeds.folder_name(f"student_{kind}", s, chosen)
            run["record"]["path"] = relative_path(run["path"], self.paths["root"])
            run["info"] |= {"exported_seed": chosen, "seeds": list(runs)}
            save_checkpoint(run["model"], self.tokenizer, run["path"], run["info"])
        self.results[kind] = {**runs[chosen], "seed": chosen, "runs": records}
        return self.results[kind]

    def train_seed(self, kind: str, seed: int) -> dict:
        """Build a fresh student from the teacher, train it one way with one seed, evaluate it."""
        p, device = self.p, self.device
        set_seed(seed)  # each student sees the same shuffles and dropout whatever ran before it
        student, mapping = build_student(self.teacher, self.student_layers)
        attention = attention_for(device, maps=kind == "kd_intermediate")  # SDPA on CUDA unless maps are read
        if student.config._attn_implementation != attention:
            student.set_attn_implementation(attention)
        loss_fn = (precomputed_kd_loss(self.teacher_logits, p.alpha, p.temperature) if kind == "kd_vanilla" else
                   intermediate_loss_fn(self.teacher_logits, self.internals, p.alpha, p.temperature, p.hidden_weight,
                                        p.attention_weight) if kind == "kd_intermediate" else None)
        rows = self.splits["train"] if kind == "baseline" else self.kd_train
        train_loader = make_loader(rows, self.tokenizer, p.batch_size, p.max_length, shuffle=True, seed=seed,
                                   pin_memory=device.type == "cuda")
        start = time.time()
        result = fit(student, train_loader, self.val_loader, device, epochs=p.epochs, lr=p.lr, patience=p.patience,
                     log_path=self.paths["logs"] / f"student_{kind}_seed{seed}_training.csv", amp=p.gpu,
                     desc=f"{kind} seed {seed}", **({"loss_fn": loss_fn} if loss_fn else {}))
        seconds = round(time.time() - start, 1)
        test = evaluate(student, self.test_loader, device, p.gpu, desc=f"{kind} test")
        val, ood = result["val"], self.score_ood(student, kind)
        agree = {"val": stats.agreement(val, self.teacher_val), "test": stats.agreement(test, self.teacher_test)}
        record = {"seed": seed, "val_macro_f1": val["macro_f1"], "test_macro_f1": test["macro_f1"],
                  "ood_val_macro_f1": ood["macro_f1"] if ood else None, "best_epoch": result["best_epoch"],
                  "train_seconds": seconds}
        info = {"kind": kind, "parent": "teacher", "layer_map": mapping, "teacher_layers": self.teacher_layers,
                "hyperparameters": self.params, **record, "teacher_agreement": agree,
                "num_parameters": bench.count_params(student), "labels": list(LABELS)}
        return {"kind": kind, "model": student.cpu(), "history": result["history"], "steps": result["steps"],
                "val": val, "test": test, "ood_val": ood, "best_epoch": result["best_epoch"], "agreement": agree,
                "info": info, "record": record}

    def compare(self) -> pd.DataFrame:
        """Val/test macro-F1, the paired delta to the teacher on each (negative = worse; test with its 95% CI, its
        bootstrap p Holm-adjusted over the students, the word, McNemar p), per-class test F1, negative recall and agreement with the teacher, per model."""
        teacher = {"val": self.teacher_val, "test": self.teacher_test}
        seed, ref = self.p.seed, self.teacher_ood
        rows = {"teacher": _row(teacher, teacher, {"val": 1.0, "test": 1.0}, seed)
                | ood_eval.ood_fields(ref, ref, seed)}
        rows |= {f"student_{k}": _row({"val": r["val"], "test": r["test"]}, teacher, r["agreement"], seed)
                 | ood_eval.ood_fields(r["ood_val"], ref, seed) for k, r in self.results.items()}
        # the word on test: Holm over the family of students compared with the teacher (the first row)
        self.table = harness.with_readings(pd.DataFrame(rows).T, ["test"])
        return self.table

    def readable(self) -> pd.DataFrame:
        """The comparison with human column names, the paired test delta and its reading in one column each."""
        t = self.table
        return pd.DataFrame({
            "val macro-F1": t["val_macro_f1"], "val Δ (pts)": t["val_delta_pts"].map("{:+.2f}".format),
            **ood_eval.readable_columns(t),
            "test macro-F1": t["test_macro_f1"],
            "test Δ (pts) [95% CI]": [stats.delta_cell(*x) for x in
                                      zip(t["test_delta_pts"], t["test_delta_ci_low"], t["test_delta_ci_high"])],
            f"test p, Holm over {stats.family_size(t['test_p_holm'])} vs teacher": t["test_p_holm"],
            "McNemar p (accuracy, unadjusted)": t["test_mcnemar_p"],
            f"on test (Holm p < {stats.ALPHA})": t["test_reading"],
            "negative recall": t["test_negative_recall"], "agrees with teacher (test)": t["agreement_test"]})

    def measure(self) -> pd.DataFrame:
        """Params, size on disk and batch-1 CPU latency of the teacher and each student, on real test sentences.

        Models are timed in interleaved rounds and each keeps its fastest round (bench.fastest_latency)."""
        p, models = self.p, {"teacher": (self.teacher, self.teacher_dir)}
        models |= {f"student_{k}": (r["model"], r["path"]) for k, r in self.results.items()}
        inputs = bench.batch1_inputs(self.tokenizer, self.splits["test"]["text"].tolist(), p.latency_seq_len, p.latency_n)
        # batch-1 CPU timing on an idle CPU: rank 0 alone under a launcher, the others receive its table
        self.sizes = rank0_only(bench.torch_sizes_and_latency, models, inputs, p.threads)
        return self.sizes

    def size_table(self) -> pd.DataFrame:
        """measure()'s figures with human names, MB rather than bytes."""
        z = self.sizes
        return pd.DataFrame({"layers": z["layers"], "parameters (M)": z["params"] / 1e6, "disk (MB)": z["disk_bytes"] / 1e6,
                             "weights (MB)": z["weight_bytes"] / 1e6, "latency (ms)": z["latency_ms"],
                             "faster than teacher (x)": z["speedup"], "weights smaller (x)": z["size_ratio"]})

    def best_kind(self) -> str:
        """Selected on the mean validation macro-F1 over seeds only: test stays untouched for the final comparison."""
        return seeds.best_on_mean({k: r["runs"] for k, r in self.results.items()})

    def seed_runs(self) -> dict[str, list[dict]]:
        """Each student's per-seed records (seed, val / test / OOD-val macro-F1, checkpoint)."""
        return {f"student_{k}": r["runs"] for k, r in self.results.items()}

    def best(self) -> str:
        return f"student_{self.best_kind()}"

    def tests(self) -> dict:
        return {"teacher test": self.teacher_test, **{f"{k} test": r["test"] for k, r in self.results.items()}}

    def plot_f1(self):
        """Val, test and OOD-val macro-F1 of every model, a dot per seed, with the target and the F1 budget."""
        t, budget = self.teacher_val["macro_f1"], self.p.max_f1_drop_pts
        teacher = {"seed": self.p.seed, "val_macro_f1": t, "test_macro_f1": self.teacher_test["macro_f1"],
                   "ood_val_macro_f1": self.teacher_ood["macro_f1"] if self.teacher_ood else None}
        lines = ((self.target_f1, f"target {self.target_f1:.2f} (val)", {"color": "red", "ls": ":"}),
                 (t - budget / 100, f"teacher val - {budget} pts (F1 goal)", {"color": "grey", "ls": "--"}))
        return plots.plot_seed_f1({"teacher": [teacher], **self.seed_runs()}, "Macro-F1: students vs teacher", lines)

    def seed_table(self) -> pd.DataFrame:
        """Each student's spread over its training seeds (the teacher is one seed) and the seed exported."""
        return plots.seed_table(self.seed_runs())

    def goal_checks(self) -> list[dict]:
        """The best student's goals, on validation (test is reported in the verdict, never judged)."""
        best, teacher_val = self.best(), self.teacher_val["macro_f1"]
        deltas = seeds.val_deltas(self.seed_runs()[best], teacher_val)
        row = {"val_delta_pts": statistics.fmean(deltas), "speedup": self.sizes.loc[best, "speedup"]}
        return goals.check_all(goals.from_params(self.params), row, best, {"val_delta_pts": deltas})

    def outcome(self) -> dict:
        return {"metrics": self._metrics(), "headline": self._headline(), "verdict": self.verdict(),
                "goals": self.goal_checks(), "variants": self.variants()}

    def variants(self) -> list:
        """The students; the one best on val says so (best_student), which later stages read from the record."""
        root, best = self.paths["root"], self.best()
        return [self.teacher_variant.derive(f"student_{k}", "hf", relative_path(r["path"], root), f"student_{k}",
                                            self.NAME, best_student=f"student_{k}" == best,
                                            test_macro_f1=r["test"]["macro_f1"],
                                            val_macro_f1=r["val"]["macro_f1"], seed=r["seed"], seed_runs=r["runs"],
                                            params=int(self.sizes.loc[f"student_{k}", "params"]),
                                            disk_bytes=int(self.sizes.loc[f"student_{k}", "disk_bytes"]),
                                            latency_ms=float(self.sizes.loc[f"student_{k}", "latency_ms"]))
                for k, r in self.results.items()]

    def verdict(self) -> str:
        """The reading of the run, written from the numbers."""
        t, s, best = self.table, self.sizes, self.best()
        kd_gain = (t.loc[best, "test_macro_f1"] - t.loc["student_baseline", "test_macro_f1"]) * 100
        return "\n".join(goals.lines(self.goal_checks()) + [
            f"* Best student by validation macro-F1: **{best}** (val {t.loc[best, 'val_macro_f1']:.4f}). On test, "
            f"reported only: macro-F1 {t.loc[best, 'test_macro_f1']:.4f}, {stats.delta_text(t.loc[best], prefix='test_')}"
            f"; {kd_gain:+.2f} points vs the no-teacher baseline.", self.seeds_line(),
            f"* Negative recall on test: teacher {t.loc['teacher', 'test_negative_recall']:.3f}, best student "
            f"{t.loc[best, 'test_negative_recall']:.3f}, baseline {t.loc['student_baseline', 'test_negative_recall']:.3f}.",
            f"* It agrees with the teacher on {t.loc[best, 'agreement_test']:.1%} of test sentences.",
            f"* {s.loc[best, 'params'] / 1e6:.1f} M parameters vs {s.loc['teacher', 'params'] / 1e6:.1f} M; weights "
            f"{s.loc[best, 'size_ratio']:.2f}x smaller; batch-1 CPU latency {s.loc[best, 'latency_ms']:.2f} ms vs "
            f"{s.loc['teacher', 'latency_ms']:.2f} ms ({s.loc[best, 'speedup']:.2f}x faster).",
            "* The embeddings are a large fixed share of a small BERT, so parameters shrink less than depth does."])

    def seeds_line(self) -> str:
        """How many seeds the choice read, whether each seed alone picks the same student, which seed is exported."""
        runs, best = self.seed_runs(), self.best()
        n, exported = len(runs[best]), self.results[self.best_kind()]["seed"]
        if n == 1:
            return (f"* One training seed ({exported}): these figures carry no training variance; "
                    "`run_all.py --seeds 3` trains every student with three.")
        picks = seeds.per_seed_best(runs)
        agree = sum(name == best for name in picks.values())
        return (f"* Chosen on the mean val macro-F1 of {n} seeds ({seeds.spread_text(seeds.summary(runs[best])['val_macro_f1'])}); "
                f"{agree} of {n} seeds alone pick it. Exported and compared above: seed {exported}, the median on val.")

    def _metrics(self) -> dict:
        root, best = self.paths["root"], self.best()
        ood = (lambda m: {"ood_val": public(m)} if m else {})
        return {"teacher": {"val": public(self.teacher_val), "test": public(self.teacher_test), **ood(self.teacher_ood),
                            **self.sizes.loc["teacher"].to_dict()},
                "students": {k: {"val": public(r["val"]), "test": public(r["test"]), **ood(r["ood_val"]),
                                 "agreement": r["agreement"], "best_epoch": r["best_epoch"], "seed": r["seed"],
                                 "seed_runs": r["runs"], "seed_spread": seeds.summary(r["runs"]),
                                 "history": r["history"]} for k, r in self.results.items()},
                "comparison": self.table.to_dict("index"), "sizes": self.sizes.to_dict("index"),
                "best_student": {"name": best, "path": relative_path(self.results[self.best_kind()]["path"], root),
                                 "seed": self.results[self.best_kind()]["seed"]},
                "seeds": seeds.training_seeds(self.p.seed, self.p.seeds),
                "student_layers": self.student_layers, "layer_map": self.layer_map, "target_f1": self.target_f1,
                "kd_training_rows": {"labeled": len(self.splits["train"]),
                                     "transfer": len(self.kd_train) - len(self.splits["train"]),
                                     "tweet_pool": len(self.tweets)},
                "hyperparameters": self.params}

    def _headline(self) -> dict:
        t, b = self.table, self.best()
        return {"best student": b, "best student val macro-F1": float(t.loc[b, "val_macro_f1"]),
                "best student test macro-F1": float(t.loc[b, "test_macro_f1"]),
                "teacher test macro-F1": float(t.loc["teacher", "test_macro_f1"]),
                "test Δ vs teacher (points)": float(t.loc[b, "test_delta_pts"]),
                "speedup batch-1": float(self.sizes.loc[b, "speedup"]), "agreement": float(t.loc[b, "agreement_test"])}


def _row(model: dict, teacher: dict, agree: dict, seed: int) -> dict:
    """One model's comparison row: per split its F1 and the paired delta to the teacher (negative = worse)."""
    val, test = model["val"], model["test"]
    d = {s: stats.compare(model[s]["labels"], model[s]["preds"], teacher[s]["preds"], seed=seed) for s in ("val", "test")}
    return {"val_macro_f1": val["macro_f1"], "val_delta_pts": d["val"]["delta_pts"], "test_macro_f1": test["macro_f1"],
            **{f"test_{k}": v for k, v in d["test"].items()},
            **{f"test_f1_{c}": f for c, f in test["per_class_f1"].items()},
            "test_negative_recall": stats.class_recall(test, LABELS.index("negative")),
            "agreement_val": agree["val"], "agreement_test": agree["test"]}
