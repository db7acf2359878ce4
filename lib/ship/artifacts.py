"""artifacts/model: the recommended variant as a folder standard tools recognise: config.json (labels, max
length, architecture), the tokenizer with predict's length rule, a Hugging Face model card, metrics.json, and
serving.json (the ONNX Runtime settings stage 05 chose on the machine of its run, or the precision an OpenVINO model
was built to run at; predict reads it)."""
import json
import shutil
from pathlib import Path

from lib.core.files import atomic_dir, write_json, write_text_atomic
from lib.core.variants import HF_CONFIG, LABELS, ONNX_FILE, OPENVINO_FILE, SHIPPED_MODEL, Variant
from lib.predict.serving import DEFAULT_MAX_LENGTH
from lib.runtime.onnxrt import SETTINGS_FILE, TOKENIZER_FILE, pad_id
from lib.runtime import openvino as ovrt
from lib.ship import card

# Keys transformers saves from the tokenizer's last call, not settings of the model: dropped, so the one length
# rule is model_max_length (and max_seq_length in config.json).
CALL_STATE = {"max_length", "truncation_strategy", "stride", "pad_to_multiple_of"}


def chain_of(variants: list[Variant], name: str) -> list[Variant]:
    """The records from the teacher to `name`, following each record's `source`."""
    by_name = {v.name: v for v in variants}
    chain = [by_name[name]]
    while chain[-1].source in by_name and by_name[chain[-1].source] not in chain:
        chain.append(by_name[chain[-1].source])
    return chain[::-1]


def text_normalization(data_dir: Path) -> str:
    """The lib.core.textnorm mode stage 01 wrote the splits in (data/summary.json); "none" for older runs."""
    summary = Path(data_dir) / "summary.json"
    return json.loads(summary.read_text()).get("text_normalization", "none") if summary.is_file() else "none"


def onnx_positions(folder: Path) -> int | None:
    """Rows of the position-embedding table in the folder's model.onnx, None when the graph has none by that name."""
    import onnx
    model = onnx.load(str(Path(folder) / ONNX_FILE), load_external_data=False)
    return next((int(t.dims[0]) for t in model.graph.initializer if t.name.endswith("position_embeddings.weight")), None)


def ir_positions(folder: Path) -> int | None:
    """The same for the folder's OpenVINO IR (its constants keep the ONNX initializers' names)."""
    model = ovrt.core().read_model(str(Path(folder) / OPENVINO_FILE))
    return next((op.get_output_partial_shape(0)[0].get_length() for op in model.get_ops() if op.get_type_name() ==
                 "Constant" and op.get_friendly_name().endswith("position_embeddings.weight")), None)


POSITIONS = {"onnx": onnx_positions, "openvino": ir_positions}  # the formats whose weights transformers cannot read


def model_config(chain: list[Variant], root: Path, tokenizer, max_length: int, normalization: str = "none") -> dict:
    """config.json for the shipped folder: its own, or for ONNX and OpenVINO the nearest saved architecture in its
    lineage with this model's vocabulary size; then the study's labels and the max length it was scored at."""
    shipped = chain[-1]
    built = next((v for v in reversed(chain) if (root / v.path / HF_CONFIG).is_file()), None)
    config = json.loads((root / built.path / HF_CONFIG).read_text()) if built else {"model_type": "bert"}
    if shipped.format in POSITIONS:  # transformers and optimum read the architecture; the weights are the runtime's
        config.update({"architectures": ["BertForSequenceClassification"], "vocab_size": tokenizer.get_vocab_size(),
                       "pad_token_id": pad_id(tokenizer, root / shipped.path)})
        # a trimmed twin reads fewer positions than the checkpoint it came from; serving checks --max-length on this
        config["max_position_embeddings"] = (POSITIONS[shipped.format](root / shipped.path)
                                             or config.get("max_position_embeddings"))
    config.update({"id2label": dict(enumerate(LABELS)), "label2id": {l: i for i, l in enumerate(LABELS)},
                   "num_labels": len(LABELS), "max_seq_length": max_length,
                   "fincompress": {"variant": shipped.name, "format": shipped.format, "precision": shipped.precision,
                                   "techniques": list(shipped.techniques),
                                   "architecture_from": built.name if built else None,
                                   "text_normalization": normalization}})
    return config


def save_tokenizer(folder: Path, max_length: int):
    """tokenizer.json pads to the longest text of a call and never truncates (predict rejects what is too
    long, or cuts with --truncate); tokenizer_config.json says the same max length. Returns the tokenizer."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tokenizer.no_truncation()
    pid = pad_id(tokenizer, folder)
    tokenizer.enable_padding(pad_id=pid, pad_token=tokenizer.id_to_token(pid))
    tokenizer.save(str(folder / TOKENIZER_FILE))
    tc_file = folder / "tokenizer_config.json"
    tc = json.loads(tc_file.read_text()) if tc_file.is_file() else {}
    write_json(tc_file, {**{k: v for k, v in tc.items() if k not in CALL_STATE}, "model_max_length": max_length})
    return tokenizer


def ship_recommended(row, df, variants: list[Variant], paths: dict, info: dict, choice: str,
                       max_length: int = DEFAULT_MAX_LENGTH, serving: dict | None = None,
                       served: dict | None = None) -> Path:
    """artifacts/model, written atomically: the recommended variant's files, config.json, tokenizer, README.md
    (the model card), metrics.json, and `serving` (lib.measure.serving_search's record) as serving.json when given.
    `max_length`: the tokens stage 05 scored it at; `served`: its macro-F1 per set as `python -m lib.predict`
    gives it."""
    root, dest = paths["root"], paths["root"] / SHIPPED_MODEL
    chain = chain_of(variants, row["name"])
    with atomic_dir(dest) as tmp:
        shutil.copytree(root / chain[-1].path, tmp, dirs_exist_ok=True)
        tokenizer = save_tokenizer(tmp, max_length)
        norm = text_normalization(root / "data")
        write_json(tmp / HF_CONFIG, model_config(chain, root, tokenizer, max_length, norm))
        family = len(df) - 1  # every variant stage 05 compared with the teacher: its words' Holm family
        write_text_atomic(tmp / "README.md", card.model_card(row, df.iloc[0], chain, info, choice, max_length, family, norm))
        write_json(tmp / "metrics.json", {"variant": row.to_dict(), "teacher": df.iloc[0].to_dict(),
                                          "served_macro_f1": served or {}, "labels": list(LABELS), "run_info": info})
        if serving is not None:  # beside what the variant's own serving.json says (an OpenVINO model's precision)
            own = json.loads((tmp / SETTINGS_FILE).read_text()) if (tmp / SETTINGS_FILE).is_file() else {}
            write_json(tmp / SETTINGS_FILE, {**own, **serving})
    return dest
