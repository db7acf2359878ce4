"""Stage 05: every variant the stages before it listed (the stacked ones of stage 06 included), benchmarked by
one harness; the recommendation against the deployment goals, and its export. It builds no variant."""
from pathlib import Path

import pandas as pd

from lib.core import goals, seeds
from lib.core.variants import Variant
from lib.data import ood
from lib.data.corpus import load_splits
from lib.measure import harness, invariance, profile, reference, serving_search, speed, yardstick
from lib.runtime.onnxrt import Settings
from lib.ship import decide, pareto, seed_mean
from lib.ship.artifacts import ship_recommended
from lib.stages.base import Stage as BaseStage

SETS = ("val", "test")  # scored by one harness: val decides, test reports; ood_val/ood_test join when stage 01 wrote them
# why a goal is not judged when its columns are absent
SKIPPED = {"ood_val_retention": "stage 01 wrote no out-of-domain sets (no tweets in the data folder)",
           "speedup_vs_reference": "n/a (no reference rows)", "throughput_vs_reference": "n/a (no reference rows)"}


class Stage(BaseStage):
    NAME = "05_benchmark"
    STEPS = ("gather", "benchmark", "score_seeds", "recommend", "tune_serving", "profile_shipped", "export")

    def gather(self) -> list[Variant]:
        """Every variant earlier stages listed, the FinBERT-sized yardstick timed beside them, and the off-the-shelf
        reference rows built from the teacher (lib.measure.reference: measured like the variants, never candidates)."""
        self.variants = self.upstream_variants()
        names = [x.strip() for x in self.p.references.split(",") if x.strip()]
        splits = load_splits(self.paths["data"])
        val = splits["val"]["text"].tolist()
        # INT8 reference rows calibrate on training sentences, as stage 06 does: val only scores them
        self.references, self.skipped = reference.build(
            self.paths["root"], self.paths["checkpoints"] / "references", self.variants[0], val, names,
            calibration=splits["train"]["text"].astype(str).tolist()) if names else ([], {})
        self.yardsticks = []  # timed beside the variants, never one of them (lib.measure.yardstick)
        if self.p.yardstick_layers:
            self.yardsticks = yardstick.build(self.paths["root"], self.paths["checkpoints"] / "yardstick", val,
                                              self.p.yardstick_layers, self.p.seed)
        return self.variants

    def describe(self) -> str:
        return "\n".join([f"* `{v.name}` ({v.format}, {v.precision}, from {v.stage}: {' -> '.join(v.techniques)})"
                          for v in self.variants] + [f"* `{v.name}` ({v.format}, {v.precision}, the yardstick: "
                                                     f"{yardstick.LABEL})" for v in self.yardsticks]
                         + [f"* `{v.name}` ({v.format}, {v.precision}: {reference.label(v.techniques)}; "
                            f"{reference.MARK})" for v in self.references]
                         + [f"* `{n}`: skipped, {why}" for n, why in self.skipped.items()])

    def benchmark(self):
        """The harness over every variant, the teacher first, on each named set (score_seeds writes the results)."""
        splits = load_splits(self.paths["data"])
        cut = self.p.max_eval or None
        named = {**{name: splits[name] for name in SETS}, **ood.load_ood_sets(self.paths["data"])}
        self.sets = {name: df.iloc[:cut] for name, df in named.items()}
        # a named out-of-domain set is skipped where stage 01 wrote none (no tweets in the data folder)
        flip_sets = [s.strip() for s in self.p.batch_flip_sets.split(",") if s.strip() in self.sets]
        df = harness.run_benchmark(self.paths["root"], self.sets, self.variants + self.references, self.p.threads,
                                   self.p.latency_n, gpu=self.device if self.p.gpu else None, seed=self.p.seed,
                                   flip_sets=flip_sets, flip_budget_pts=self.p.max_f1_drop_pts)
        refs = decide.reference_rows(df)  # the same harness and statistics; the reference rows are kept apart
        self.refs = df[refs].reset_index(drop=True)
        self.df = decide.with_reference_ratios(df[~refs].reset_index(drop=True), self.refs)
        self.yard = harness.run_yardstick(self.paths["root"], self.sets["val"]["text"].tolist(), self.yardsticks,
                                          self.df.iloc[0], self.p.threads, self.p.latency_n,
                                          self.p.seed) if self.yardsticks else None
        self.peak = speed.measure_peak(self.p.threads, self.p.peak_seconds)
        speed.with_peak_share(speed.with_finbert_ratio(self.df, self.yard), self.peak)
        speed.with_peak_share(speed.with_finbert_ratio(self.refs, self.yard), self.peak)
        if self.yard is not None:
            speed.with_peak_share(speed.with_finbert_ratio(self.yard, self.yard), self.peak)
        return self.df

    def score_seeds(self) -> dict[str, list[dict]]:
        """The models of the other training seeds of every variant the ship rule can read (within the F1 budget plus
        harness.FLIP_MARGIN_PTS on its exported seed, as for batch flips), scored on the validation sets; the F1
        goals then read each such variant's seed mean (lib.ship.seed_mean). Writes results/benchmark.{csv,json}."""
        floor = self.df.iloc[0]["val_macro_f1"] - (self.p.max_f1_drop_pts + harness.FLIP_MARGIN_PTS) / 100
        row = self.df.set_index("name")
        read = [(v, twins) for v in self.variants if (twins := seeds.twins(v)) and row.loc[v.name, "val_macro_f1"] >= floor]
        sets = {s: self.sets[s] for s in seed_mean.SETS if s in self.sets}
        scored = harness.score_twins(self.paths["root"], sets, [t for _, twins in read for t in twins],
                                     self.p.threads, self.p.seed)
        self.seed_runs = {v.name: [seed_mean.record(v.metrics["seed"], {s: row.loc[v.name, f"{s}_macro_f1"] for s in sets},
                                                    True)]
                          + [seed_mean.record(t.metrics["seed"], scored[t.name], False) for t in twins]
                          for v, twins in read}
        self.df = seed_mean.with_seed_means(self.df, self.seed_runs)
        self.refs = seed_mean.with_seed_means(self.refs, {})  # a reference row is one model: it reads its own figures
        harness.write_results(self.df, self.paths["root"] / "results", self.info, peak=self.peak,
                              yardstick=[] if self.yard is None else self.yard.to_dict("records"),
                              references=self.refs.to_dict("records"), references_skipped=self.skipped,
                              seed_runs=self.seed_runs)
        return self.seed_runs

    def all_goals(self) -> list[goals.Goal]:
        """Every deployment goal; the F1 ones read the seed-mean columns (lib.ship.seed_mean)."""
        return goals.from_params(self.params, columns=decide.COLUMNS | seed_mean.SEED_COLUMNS)

    def stage_goals(self) -> list[goals.Goal]:
        """The deployment goals; the OOD-retention goal is skipped (with a note in the verdict) without OOD sets."""
        return [g for g in self.all_goals() if g.metric in self.df]

    def skipped_goals(self) -> str:
        """One line per goal not judged, and why (SKIPPED, by the metric the goal bounds before any renaming)."""
        return "\n".join(f"* Goal {g.name} ({g.text}) skipped: {SKIPPED[goals.KINDS[g.name].metric]}." for g in
                         self.all_goals() if g.metric not in self.df)

    def recommend(self):
        """The choice, on validation columns only (test columns are reported, never read here)."""
        self.recommended = decide.recommend(self.df, self.stage_goals())
        return self.recommended

    def goal_checks(self) -> list[dict]:
        """Each goal on the recommendation; an F1 goal read on seeds also says in how many of them it was met."""
        rec = self.recommended
        runs = self.seed_runs.get(rec["name"])
        return goals.check_all(self.stage_goals(), rec, rec["name"],
                               seed_mean.per_seed(runs, self.df.iloc[0]) if runs else None)

    def tables(self) -> tuple:
        """Quality per set (with the paired delta to the teacher) and costs, numbered as the plot's points; the
        reference rows under the candidates, marked."""
        ood_sets = [s for s in self.sets if s in ood.OOD_SETS]
        return (speed.quality_table(reference.beside(decide.quality_table, self.df, self.refs, list(SETS)), self.yard),
                speed.cost_table(self.df, self.yard, self.refs),
                reference.beside(decide.ood_table, self.df, self.refs, ood_sets) if ood_sets else None)

    def reference_table(self):
        """The shipped model beside every reference row (None without reference rows)."""
        return reference.table(self.recommended, self.refs) if len(self.refs) else None

    def hardware(self) -> str:
        """End to end, against FinBERT's shape, and the share of the CPU's matmul peak, for the recommendation."""
        return speed.summary(self.recommended, self.yard, self.peak)

    def plot_tradeoffs(self):
        """The Pareto plot, also written to reports/img for the index page."""
        fig = pareto.plot_tradeoffs(self.df, self.recommended["name"], self.params)
        return self.save_figure(fig, "pareto")

    def tune_serving(self) -> dict | None:
        """ONNX Runtime's serving settings for the recommendation, searched on this machine (lib.measure.
        serving_search); None, and ORT's defaults shipped, with serving_n = 0 or a model ORT does not serve."""
        shipped = next(v for v in self.variants if v.name == self.recommended["name"])
        self.serving = None
        if self.p.serving_n and shipped.format == "onnx":
            self.serving = serving_search.run(shipped.location(self.paths["root"]), self.sets["val"]["text"].tolist(),
                                              self.p.threads, self.p.serving_n, self.p.serving_rounds)
        return self.serving

    def serving_text(self) -> str:
        """The report's paragraph on the serving settings shipped, or why none were searched."""
        why = "serving_n = 0" if not self.p.serving_n else (
            f"`{self.recommended['name']}` does not run on ONNX Runtime; an OpenVINO model serves with latency hints, "
            "one stream and the precision it was built and scored with")
        return serving_search.summary(self.serving, why)

    def profile_shipped(self) -> dict | None:
        """Where the recommendation's time goes, per operator group at batch 1 and 32, with the serving settings it
        ships with (lib.measure.profile); None with profile_n = 0 or a format no collector reads."""
        shipped = next(v for v in self.variants if v.name == self.recommended["name"])
        self.profiled = profile.of_variant(shipped, self.paths["root"], self.sets["val"]["text"].tolist(), self.p.profile_n,
                                           serving_search.chosen(self.serving) or Settings(self.p.threads), self.peak)
        return self.profiled

    def export(self) -> Path:
        """artifacts/model: the recommended variant, self-describing (config, tokenizer, model card); `python -m
        lib.predict` serves it. First its macro-F1 per set as predict gives it (its defaults, the serving settings it
        ships with), for metrics.json."""
        rec = self.recommended
        shipped = next(v for v in self.variants if v.name == rec["name"])
        self.served = invariance.served_f1(shipped.location(self.paths["root"]), {
            name: (df["text"].tolist(), df["label"].to_numpy()) for name, df in self.sets.items()}, self.p.threads,
            serving_search.chosen(self.serving))
        self.exported = ship_recommended(rec, self.df, self.variants, self.paths, self.info,
                                         decide.choice_rule(rec, self.stage_goals()), serving=self.serving,
                                         served=self.served)
        return self.exported

    def outcome(self) -> dict:
        rec, test, checks = self.recommended, SETS[-1], self.goal_checks()
        return {"metrics": {"variants_measured": len(self.df), "sets": {k: len(v) for k, v in self.sets.items()},
                            "recommended": rec.to_dict(), "table": decide.index_table(self.df),
                            "shipped": {"name": rec["name"], "lineage": decide.lineage(self.df, rec["name"])},
                            "artifact": str(self.exported), "peak": self.peak, "serving": self.serving,
                            "served_macro_f1": self.served, "profile": self.profiled, "seed_runs": self.seed_runs,
                            "yardstick": [] if self.yard is None else self.yard.to_dict("records"),
                            "references": self.refs.to_dict("records"), "references_skipped": self.skipped},
                "headline": {"recommended": rec["name"], "recommended val macro-F1": rec["val_macro_f1"],
                             **({f"val Δ vs teacher, mean of its {rec['seeds_read']:.0f} seeds (points)":
                                 rec["seed_val_delta_pts"]} if rec["seeds_read"] > 1 else {}),
                             f"recommended {test} macro-F1": rec[f"{test}_macro_f1"],
                             f"{test} Δ vs teacher (points)": rec[f"{test}_delta_pts"],
                             "faster than teacher (x)": rec["speedup_vs_teacher"],
                             "smaller than teacher (x)": rec["size_ratio_vs_teacher"],
                             "e2e ms batch 1": rec["e2e_latency_median_ms"],
                             "e2e sentences/s batch 32": rec["e2e_throughput_b32_per_s"],
                             **({"faster than FinBERT-sized FP32 (untrained, shape only) (x)": rec["speedup_vs_finbert_fp32"]}
                                if "speedup_vs_finbert_fp32" in rec else {}),
                             **({"e2e faster than the fastest reference row, batch 1 (x)": rec["speedup_vs_reference"],
                                 "e2e throughput vs the best reference row, batch 32 (x)": rec["throughput_vs_reference"]}
                                if "speedup_vs_reference" in rec else {}),
                             **({"share of INT8 peak at batch 32": rec["share_int8_peak_b32"]}
                                if pd.notna(rec.get("share_int8_peak_b32")) else {}),
                             **({"OOD-val kept vs teacher": rec["ood_val_retention"],
                                 "OOD-test kept vs teacher": rec["ood_test_retention"]} if "ood_test_retention" in rec else {})},
                "goals": checks,
                "verdict": "\n\n".join(filter(None, [
                    decide.recommendation_text(rec, self.df, self.stage_goals(), list(SETS),
                                               seed_mean.seeds_line(rec, self.seed_runs, self.df.iloc[0]), checks),
                    seed_mean.read_text(self.seed_runs),
                    invariance.served_text(rec, self.served), decide.ood_text(rec, self.df),
                    reference.summary(rec, self.refs, self.skipped) if self.p.references else "",
                    self.skipped_goals(), "Speed as a user meets it, and how close to the hardware:\n\n" + self.hardware()]))}
