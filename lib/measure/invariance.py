"""Labels that must not depend on a sentence's batch-mates. Dynamic INT8 (ONNX Runtime's DynamicQuantizeLinear,
PyTorch's quantize_dynamic) takes one activation scale over the whole batch tensor, padding included, so a label can
change with the other sentences of its batch: stage 05 scores every variant on shuffled batches of 32 (batch-mates at
random, as a server sees them), runs the chosen sets again one sentence at a time, and counts the labels that differ
("batch flips"). Then the shipped model's F1 as `python -m lib.predict` gives it."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.modeling.train import scores
from lib.predict import command, serving


def shuffled(n: int, seed: int) -> np.ndarray:
    """The fixed order a set of n sentences is batched in: seeded per set, so a set's batches do not depend on the
    sets measured before it."""
    return np.random.default_rng(seed).permutation(n)


def in_input_order(logits: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Logits computed in `order` put back in the order of the input sentences."""
    out = np.empty_like(logits)
    out[order] = logits
    return out


def batch_flips(predict, inputs: list[dict], batched_logits) -> dict:
    """Each sentence alone (`inputs`: one tokenized sentence each, natural length) against its label from the
    batched logits: how many of the n labels differ."""
    alone = np.array([int(np.asarray(predict(x)).reshape(-1).argmax()) for x in inputs])
    return {"flips": int((alone != np.asarray(batched_logits).argmax(1)).sum()), "n": len(inputs)}


@dataclass(frozen=True)
class FlipGate:
    """Count a variant's batch flips only where the ship rule can read them: its macro-F1 on `set_name` (the set
    that decides) is at least `min_macro_f1`. Outside the F1 budget a variant cannot ship, flips or not."""
    set_name: str
    labels: tuple
    min_macro_f1: float

    def admits(self, logits: dict) -> bool:
        """True where the variant's logits on the deciding set reach the floor (and where that set was not scored)."""
        if self.set_name not in logits:
            return True
        return scores(np.asarray(self.labels), np.asarray(logits[self.set_name]).argmax(1))["macro_f1"] >= self.min_macro_f1


def served_f1(path, sets: dict, threads: int = 2, settings=None) -> dict[str, float]:
    """Macro-F1 per set ({name: (texts, labels)}) as `python -m lib.predict` gives it with its defaults: the model's
    text normalization, chunks of CHUNK_ROWS, each sorted by length into batches of its default size, ONNX Runtime
    on `settings` (the serving.json it ships with). Texts longer than the model reads are cut (its --truncate)."""
    model = serving.load(Path(path), None if settings else threads, settings)
    serving.set_truncation(model.tokenizer, model.max_length)
    out = {}
    for name, (texts, labels) in sets.items():
        chunks = [texts[i:i + command.CHUNK_ROWS] for i in range(0, len(texts), command.CHUNK_ROWS)]
        probs = np.concatenate([serving.classify(model, serving.encode(model, c), command.BATCH_SIZE) for c in chunks])
        out[name] = scores(np.asarray(labels), probs.argmax(1))["macro_f1"]
    return out


def served_text(row, served: dict[str, float]) -> str:
    """The verdict's line on the shipped model's F1 as predict serves it, against the table's (shuffled batch 32)."""
    figures = ", ".join(f"{s} {f1:.3f}" for s, f1 in served.items())
    differ = [f"{s} {row[f'{s}_macro_f1']:.3f}" for s, f1 in served.items() if round(f1 - row[f"{s}_macro_f1"], 12)]
    same = ("the same as the table's (shuffled batches of 32) on every set" if not differ else
            f"the table's (shuffled batches of 32) differ: {', '.join(differ)}, because batch-mates move its labels")
    return (f"As `python -m lib.predict` serves `{row['name']}` (its defaults: sentences sorted by length into "
            f"batches of {command.BATCH_SIZE}): macro-F1 {figures}; {same}.")
