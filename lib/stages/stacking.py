"""Stage 06: compression stacked as it would ship, built before the benchmark measures it. Every pruned variant
-> (a vocabulary-trimmed twin) -> ONNX FP32 -> ONNX Runtime INT8, dynamic and static, each keeping the FP32 groups
and the calibration stage 03 chose on val for the model the pruned one was made from (read from stage 03's
variants). Stage 05 then measures these with everything else."""
from transformers import AutoTokenizer

from lib import formats
from lib.core.variants import Variant
from lib.data import ood
from lib.data.corpus import load_splits
from lib.predict.serving import DEFAULT_MAX_LENGTH
from lib.stages.base import Stage as BaseStage
from lib.techniques import quantize as q, quantize_static as qs, vocab
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
        self.variants = build_stacked(self.paths, self.pruned if self.p.stacked else [], splits["val"]["text"].tolist(),
                                      self.keep_groups, vocab_texts=vocab_texts, vocab_frequent=self.p.vocab_frequent,
                                      static=static, vocab_min_count=self.p.vocab_min_count)
        return self.variants

    def describe(self) -> str:
        return "\n".join(f"* `{v.name}` (from `{v.source}`: {' -> '.join(v.techniques[-3:])}; ONNX parity max |logit "
                         f"diff| {v.metrics['onnx_parity']:.1e}{self.calibration_words(v)})" for v in self.variants)

    @staticmethod
    def calibration_words(v: Variant) -> str:
        return f"; static scales by {v.metrics['calibration']}" if v.metrics.get("calibration") else ""

    def outcome(self) -> dict:
        trimmed = [v for v in self.variants if "vocab_trim" in v.techniques]
        made = ", ".join(f"`{v.name}`" for v in self.variants) or "none"
        return {"metrics": {"stacked": [v.name for v in self.variants], "from": [v.name for v in self.pruned],
                            "keep_fp32_groups": self.keep_groups, "calibrations": self.calibrations},
                "headline": {"stacked variants": len(self.variants), "from pruned variants": len(self.pruned),
                             "vocabulary-trimmed": len(trimmed)},
                "verdict": (f"Built {len(self.variants)} stacked INT8 variants from {len(self.pruned)} pruned ones: "
                            f"{made}. Stage 05 measures them with every other variant; this stage chooses nothing."),
                "variants": self.variants}


def stacked_onnx(v: Variant, name: str, model, tokenizer, keep, trimmed: bool, paths: dict, texts, tol,
                 static: dict | None = None) -> list[Variant]:
    """`v`'s (pruned) model as FP32 ONNX, then ORT dynamic INT8 and, when stage 03 chose a calibration for the
    model `v` was pruned from and static["n"] > 0, static INT8 calibrated by that method on training sentences."""
    qdir = paths["checkpoints"] / "stacked"
    fp32_dir, parity = save_onnx_fp32(name, model, tokenizer, texts[:8], qdir, tol)
    path = save_onnx_int8(name, fp32_dir, tokenizer, qdir, keep)
    print(f"stacked {name}_onnx_int8: ONNX parity max |logit diff| {parity['max_abs_diff']:.2e}")
    steps = ("vocab_trim",) * trimmed + ("onnx_export",)
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


def build_stacked(paths: dict, pruned: list[Variant], texts: list[str], keep_groups: dict, tol: float = 1e-3,
                  vocab_texts: list[str] | None = None, vocab_frequent: int = 0, static: dict | None = None,
                  vocab_min_count: int = 1) -> list[Variant]:
    """Pruned model -> ONNX -> ORT INT8 (dynamic, and static: stacked_onnx) for each of `pruned`: compression
    stacked as it would ship. With `vocab_texts`, each also gets a `_vocab` twin whose vocabulary keeps only the
    tokens those texts use (and only the positions the study reads)."""
    stacked = []
    for v in pruned:  # Stage.gather picked them by format
        model, tokenizer = formats.load_torch(v, paths["root"]), AutoTokenizer.from_pretrained(v.location(paths["root"]))
        keep = q.modules_in(model, keep_groups.get(v.source, []))  # the FP32 choice made for the model it was pruned from
        stacked += stacked_onnx(v, v.name, model, tokenizer, keep, False, paths, texts, tol, static)
        if vocab_texts:  # trimming swaps only the word-embedding table, so the FP32 choices above still hold
            model, tokenizer, kept = vocab.trim_vocab(model, tokenizer, vocab_texts, vocab_frequent, vocab_min_count)
            model = vocab.trim_positions(model, DEFAULT_MAX_LENGTH)
            print(f"{v.name}_vocab: {len(kept)} of the vocabulary's tokens kept")
            stacked += stacked_onnx(v, f"{v.name}_vocab", model, tokenizer, keep, True, paths, texts, tol, static)
    return stacked
