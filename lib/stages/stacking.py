"""Stage 06: compression stacked as it would ship, built before the benchmark measures it. Every pruned variant
-> (a vocabulary-trimmed twin) -> ONNX FP32 -> under each runtime asked for: ONNX Runtime INT8, dynamic and static,
each keeping the FP32 groups and the calibration stage 03 chose on val for the model the pruned one was made from
(read from stage 03's variants); OpenVINO FP32 IR, its bf16 twin where the CPU runs bf16, and NNCF INT8. Stage 05
then measures these with everything else."""
from functools import partial

from transformers import AutoTokenizer

from lib import formats
from lib.core import seeds
from lib.core.runinfo import cpu_flags
from lib.core.variants import Variant
from lib.data import ood
from lib.data.corpus import load_splits
from lib.measure import harness
from lib.predict.serving import DEFAULT_MAX_LENGTH
from lib.stages.base import Stage as BaseStage
from lib.runtime.openvino import bf16_supported
from lib.techniques import openvino_export as ovx, quantize as q, quantize_static as qs, vocab
from lib.techniques.onnx_export import save_onnx_fp32, save_onnx_int8, save_onnx_static_int8


class Stage(BaseStage):
    NAME = "06_stacking"
    STEPS = ("gather", "build")

    def gather(self) -> list[Variant]:
        """The pruned variants, and what stage 03 chose for their sources: kept FP32 groups and calibration."""
        upstream = self.upstream_variants()
        self.pruned = [v for v in upstream if v.format == "pruned"]
        # stage 03's ONNX INT8 variants carry them, by the FP32 model they were made from (empty without stage 03)
        self.keep_groups = {v.source: v.metrics["keep_fp32_groups"] for v in upstream if "keep_fp32_groups" in v.metrics}
        self.calibrations = {v.source: v.metrics["calibration"] for v in upstream
                             if v.metrics.get("calibration") and "onnx_static_int8" in v.techniques}
        return self.pruned

    def build(self) -> list[Variant]:
        """Each pruned variant stacked, and its vocabulary-trimmed twin (trim_vocab)."""
        splits = load_splits(self.paths["data"])
        # train text and the unlabeled tweet pool, never val: val must see what trimming loses to choose on it
        vocab_texts = (splits["train"]["text"].tolist() + ood.load_tweet_pool(self.paths["data"])
                       if self.p.trim_vocab else None)
        static = {"texts": splits["train"]["text"].astype(str).tolist(), "n": self.p.calibration_n,
                  "methods": self.calibrations, "seed": self.p.seed}
        self.runtimes = tuple(r.strip() for r in self.p.runtimes.split(",") if r.strip())
        self.bf16 = bf16_supported(cpu_flags())  # else OpenVINO would emulate bf16: no twin to measure
        kwargs = dict(vocab_texts=vocab_texts, vocab_frequent=self.p.vocab_frequent, static=static,
                      vocab_min_count=self.p.vocab_min_count, runtimes=self.runtimes, bf16=self.bf16)
        # the same recipes from the pruned models of the other training seeds: stage 05 reads their seed mean
        models = [(v, seeds.twins(v) if self.p.seed_twins else []) for v in (self.pruned if self.p.stacked else [])]
        build = partial(build_one, self.paths, splits["val"]["text"].tolist(), self.keep_groups, kwargs)
        built = iter(harness.in_workers(build, [m for v, twins in models for m in [v, *twins]], self.p.workers))
        self.variants, self.twins = [], 0
        for v, twins in models:
            made, others = next(built), {t.metrics["seed"]: next(built) for t in twins}
            self.twins += sum(map(len, others.values()))
            self.variants += with_seed_runs(made, v.metrics.get("seed"), others)
        return self.variants

    def describe(self) -> str:
        return "\n".join(f"* `{v.name}` (from `{v.source}`: {' -> '.join(v.techniques[-3:])}; {self.parity_words(v)}"
                         f"{self.calibration_words(v)})" for v in self.variants)

    @staticmethod
    def parity_words(v: Variant) -> str:
        if "openvino_parity" not in v.metrics:
            return f"ONNX parity max |logit diff| {v.metrics['onnx_parity']:.1e}"
        return (f"max |logit diff| {v.metrics['openvino_parity']:.1e} and label agreement "
                f"{v.metrics['openvino_agreement']:.0%} against the FP32 ONNX graph in ONNX Runtime")

    @staticmethod
    def calibration_words(v: Variant) -> str:
        return f"; static scales by {v.metrics['calibration']}" if v.metrics.get("calibration") else ""

    def outcome(self) -> dict:
        trimmed = [v for v in self.variants if "vocab_trim" in v.techniques]
        made = ", ".join(f"`{v.name}`" for v in self.variants) or "none"
        return {"metrics": {"stacked": [v.name for v in self.variants], "from": [v.name for v in self.pruned],
                            "keep_fp32_groups": self.keep_groups, "calibrations": self.calibrations,
                            "runtimes": list(self.runtimes), "openvino_bf16": self.bf16, "seed_twins": self.twins},
                "headline": {"stacked variants": len(self.variants), "from pruned variants": len(self.pruned),
                             "vocabulary-trimmed": len(trimmed), "built from other training seeds": self.twins,
                             "OpenVINO variants": sum(v.format == "openvino" for v in self.variants)},
                "verdict": (f"Built {len(self.variants)} stacked variants from {len(self.pruned)} pruned ones: "
                            f"{made}. Stage 05 measures them with every other variant; this stage chooses nothing. "
                            f"{self.twins} more were built the same way from the pruned models of the other training "
                            "seeds: stage 05 scores them on validation where the ship rule reads the seed mean."),
                "variants": self.variants}


def with_seed_runs(made: list[Variant], exported: int | None, others: dict[int, list[Variant]]) -> list[Variant]:
    """Each stacked variant with seed_runs: its own seed and path, then the same recipe (techniques, format,
    precision) built from each other seed's pruned model; unchanged where no other seed was built."""
    if not others:
        return made
    key = lambda m: (m.techniques, m.format, m.precision)  # noqa: E731 (a recipe is what was done, not a name)
    return [m.with_metrics(seed=exported, seed_runs=[{"seed": exported, "path": m.path}] + [
        {"seed": s, "path": t.path} for s, ts in others.items() for t in ts if key(t) == key(m)]) for m in made]


def stacked_onnx(v: Variant, name: str, fp32_dir, tokenizer, keep, steps: tuple, paths: dict, parity: dict,
                 static: dict | None = None) -> list[Variant]:
    """ORT dynamic INT8 of `v`'s FP32 ONNX graph and, when stage 03 chose a calibration for the model `v` was pruned
    from and static["n"] > 0, static INT8 calibrated by that method on training sentences."""
    qdir = paths["checkpoints"] / "stacked"
    path = save_onnx_int8(name, fp32_dir, tokenizer, qdir, keep)
    print(f"stacked {name}_onnx_int8: ONNX parity max |logit diff| {parity['max_abs_diff']:.2e}")
    made = [v.derive(f"{name}_onnx_int8", "onnx", path.relative_to(paths["root"]), steps + ("onnx_int8",), Stage.NAME,
                     "int8", onnx_parity=parity["max_abs_diff"])]
    method = (static or {}).get("methods", {}).get(v.source)
    if method and static["n"]:
        feeds = qs.calibration_inputs(tokenizer, static["texts"], n=static["n"], seed=static["seed"])
        path = save_onnx_static_int8(name, fp32_dir, tokenizer, qdir, keep, feeds, method)
        print(f"stacked {name}_onnx_static_int8: calibrated ({method}, as stage 03 chose for {v.source}) on "
              f"{sum(len(f['input_ids']) for f in feeds)} training sentences")
        made.append(v.derive(f"{name}_onnx_static_int8", "onnx", path.relative_to(paths["root"]),
                             steps + ("onnx_static_int8",), Stage.NAME, "int8", calibration=method,
                             onnx_parity=parity["max_abs_diff"]))
    return made


def stacked_openvino(v: Variant, name: str, fp32_dir, tokenizer, steps: tuple, paths: dict, texts, tol,
                     static: dict | None = None, bf16: bool = False) -> list[Variant]:
    """OpenVINO from `v`'s FP32 ONNX graph: the FP32 IR, its bf16 twin when `bf16` (the CPU runs bf16 natively), and
    NNCF INT8 calibrated on static["n"] training sentences (none when 0), drawn as ORT's static INT8 draws them."""
    qdir, root = paths["checkpoints"] / "stacked", paths["root"]

    def record(path, suffix: str, technique: str, precision: str, parity: dict, **extra) -> Variant:
        print(f"stacked {name}{suffix}: max |logit diff| {parity['max_abs_diff']:.2e} against ONNX Runtime FP32")
        return v.derive(f"{name}{suffix}", "openvino", path.relative_to(root), steps + technique, Stage.NAME, precision,
                        openvino_parity=parity["max_abs_diff"], openvino_agreement=parity["agreement"], **extra)
    path, parity = ovx.save_openvino_fp32(name, fp32_dir, tokenizer, qdir, texts[:8], tol)
    made = [record(path, "_openvino", ("openvino",), "fp32", parity)]
    if bf16:
        twin, parity = ovx.save_openvino_bf16(name, path, fp32_dir, tokenizer, qdir, texts[:8])
        made.append(record(twin, "_openvino_bf16", ("openvino", "openvino_bf16"), "bf16", parity))
    if (static or {}).get("n"):
        feeds = qs.calibration_inputs(tokenizer, static["texts"], n=static["n"], seed=static["seed"])
        int8, parity = ovx.save_openvino_int8(name, path, fp32_dir, tokenizer, qdir, feeds, texts[:8])
        made.append(record(int8, "_openvino_int8", ("openvino", "nncf_int8"), "int8", parity, calibration="nncf"))
    return made


def stacked(v: Variant, name: str, model, tokenizer, keep, trimmed: bool, paths: dict, texts, tol,
            static: dict | None = None, runtimes: tuple = ("onnxruntime",), bf16: bool = False) -> list[Variant]:
    """`v`'s (pruned) model as FP32 ONNX, kept only if it matches PyTorch, then built for each of `runtimes`."""
    fp32_dir, parity = save_onnx_fp32(name, model, tokenizer, texts[:8], paths["checkpoints"] / "stacked", tol)
    steps = ("vocab_trim",) * trimmed + ("onnx_export",)
    made = []
    if "onnxruntime" in runtimes:
        made += stacked_onnx(v, name, fp32_dir, tokenizer, keep, steps, paths, parity, static)
    if "openvino" in runtimes:
        made += stacked_openvino(v, name, fp32_dir, tokenizer, steps, paths, texts, tol, static, bf16)
    return made


def build_one(paths: dict, texts: list[str], keep_groups: dict, kwargs: dict, pruned: Variant) -> list[Variant]:
    """build_stacked for one pruned model: what each worker process of Stage.build runs."""
    return build_stacked(paths, [pruned], texts, keep_groups, **kwargs)


def build_stacked(paths: dict, pruned: list[Variant], texts: list[str], keep_groups: dict, tol: float = 1e-3,
                  vocab_texts: list[str] | None = None, vocab_frequent: int = 0, static: dict | None = None,
                  vocab_min_count: int = 1, runtimes: tuple = ("onnxruntime",), bf16: bool = False) -> list[Variant]:
    """Pruned model -> ONNX -> each of `runtimes` (stacked) for each of `pruned`: compression stacked as it would
    ship. With `vocab_texts`, each also gets a `_vocab` twin whose vocabulary keeps only the tokens those texts use
    (and only the positions the study reads). `bf16`: the CPU runs bf16, so OpenVINO gets a bf16 twin."""
    stacked_all = []
    for v in pruned:  # Stage.gather picked them by format
        model, tokenizer = formats.load_torch(v, paths["root"]), AutoTokenizer.from_pretrained(v.location(paths["root"]))
        keep = q.modules_in(model, keep_groups.get(v.source, []))  # the FP32 choice made for the model it was pruned from
        stacked_all += stacked(v, v.name, model, tokenizer, keep, False, paths, texts, tol, static, runtimes, bf16)
        if vocab_texts:  # trimming swaps only the word-embedding table, so the FP32 choices above still hold
            model, tokenizer, kept = vocab.trim_vocab(model, tokenizer, vocab_texts, vocab_frequent, vocab_min_count)
            model = vocab.trim_positions(model, DEFAULT_MAX_LENGTH)
            print(f"{v.name}_vocab: {len(kept)} of the vocabulary's tokens kept")
            stacked_all += stacked(v, f"{v.name}_vocab", model, tokenizer, keep, True, paths, texts, tol, static,
                                   runtimes, bf16)
    return stacked_all
