"""Fine-tuning: model loading, AdamW groups, warmup schedule, early stopping, the training loop."""
import copy
import csv
import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, write_json, write_text_atomic
from lib.core.model_source import PACKAGED_TEACHER, resolve_model_source
from lib.core.params import check_range
from lib.core.variants import LABELS
from lib.data import batching
from lib.data.batching import make_loader, model_inputs, pinned, to_device
from lib.data.corpus import LABEL2ID, load_splits
from lib.modeling import curves
from lib.modeling.distributed import data_parallel, dist_env
from lib.modeling.distributed import from_rank0, shard_loader

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "layernorm")


def remap_classifier(model, old_id2label: dict) -> None:
    """Reorder a pretrained 3-way head (e.g. FinBERT's positive/negative/neutral) into our label order."""
    names = {int(i): str(n).lower() for i, n in old_id2label.items()}
    order = [next(i for i, n in names.items() if n == label) for label in LABELS]
    head = model.classifier
    with torch.no_grad():
        head.weight.copy_(head.weight[order].clone())
        head.bias.copy_(head.bias[order].clone())


def attention_for(device, maps: bool = False) -> str:
    """SDPA kernels on CUDA; eager where attention maps are read (intermediate KD, entropy pruning) and on
    the CPU, whose figures stay bit-identical to earlier runs (SDPA moves CPU logits by ~4e-8)."""
    return "sdpa" if device.type == "cuda" and not maps else "eager"


def load_classifier(name: str, attn_implementation: str = "eager"):
    """Model + tokenizer with our id2label; a pretrained sentiment head is remapped, not discarded."""
    source = resolve_model_source(name)
    if Path(source).is_dir():
        manifest.check(source)  # a damaged checkpoint of ours: one line naming the file and the stage to re-run
    try:
        config = AutoConfig.from_pretrained(source)
        old = {int(i): str(n).lower() for i, n in config.id2label.items()}
        keep_head = config.num_labels == len(LABELS) and sorted(old.values()) == sorted(LABELS)
        # A head we can't map (or none, as in MiniLM) is replaced by a fresh 3-way one.
        extra = {} if keep_head else {"num_labels": len(LABELS), "ignore_mismatched_sizes": True}
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation=attn_implementation,
                                                                   **extra)
    except (OSError, SafetensorError) as e:  # a folder we did not write (no manifest) can still be damaged
        fix = "pass a complete save_pretrained folder" if Path(source).is_dir() else "offline, use a local folder"
        raise FinCompressError(f"cannot load model {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                               f"{fix} or {PACKAGED_TEACHER}") from None
    if keep_head:
        remap_classifier(model, old)
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = dict(LABEL2ID)
    return model, tokenizer


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weights, none on biases and LayerNorm (as in BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model, lr: float, weight_decay: float, device) -> torch.optim.AdamW:
    """AdamW over param_groups, fused on CPU and CUDA: the per-tensor loop took a quarter of a small model's CPU step
    (its 30k-token embedding table is updated densely every step), the fused kernel a fifth of that."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=device.type in ("cpu", "cuda"))


def warmup_linear(optimizer, total_steps: int, warmup_frac: float = 0.1):
    """Linear warmup over warmup_frac of the steps, then linear decay to zero."""
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EarlyStopping:
    """Stop after `patience` epochs without a better val F1; remember the best epoch."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_epoch, self.bad = patience, -1.0, -1, 0

    def step(self, score: float, epoch: int) -> bool:
        """Record an epoch's score; True when this is a new best."""
        if score > self.best:
            self.best, self.best_epoch, self.bad = score, epoch, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience


@torch.no_grad()
def logits_over(model, loader, device, amp: bool = False, desc: str = "eval") -> dict:
    """Logits, labels and loss over a loader, in its dataset's order."""
    model.eval()
    logits, labels, idx = [], [], []
    for batch in tqdm(pinned(loader, device), desc=desc, mininterval=10, ascii=True, leave=True):
        batch = to_device(batch, device)
        with batching.autocast(device, amp):
            out = model(**model_inputs(batch))
        logits.append(out.logits.float().cpu())
        labels.append(batch["labels"].cpu())
        idx += [batch["idx"].cpu()] if "idx" in batch else []
    order = batching.input_order(idx)  # evaluation batches run length-sorted
    logits, labels = torch.cat(logits)[order], torch.cat(labels)[order]
    # ignore_index: unlabeled transfer sentences (label -1) only need logits
    return {"logits": logits, "labels": labels, "loss": F.cross_entropy(logits, labels, ignore_index=-1).item()}


def scores(labels, preds) -> dict:
    labels, preds = np.asarray(labels), np.asarray(preds)
    per_class = f1_score(labels, preds, average=None, labels=range(len(LABELS)), zero_division=0)
    return {"macro_f1": float(f1_score(labels, preds, average="macro", labels=range(len(LABELS)), zero_division=0)),
            "accuracy": float(accuracy_score(labels, preds)),
            "per_class_f1": {LABELS[i]: float(f) for i, f in enumerate(per_class)}}


def evaluate(model, loader, device, amp: bool = False, desc: str = "eval") -> dict:
    """Macro-F1, accuracy, per-class F1, loss, plus labels/preds for confusion matrices."""
    out = logits_over(model, loader, device, amp, desc)
    preds = out["logits"].argmax(-1)
    return {**scores(out["labels"], preds), "loss": out["loss"], "labels": out["labels"].tolist(),
            "preds": preds.tolist(), "logits": out["logits"]}


def cross_entropy_loss(model, batch):
    out = model(**model_inputs(batch))
    return F.cross_entropy(out.logits.float(), batch["labels"]), {}


def fit(model, train_loader, val_loader, device, *, epochs: int, lr: float, weight_decay: float = 0.01,
        warmup_frac: float = 0.1, patience: int = 3, loss_fn=cross_entropy_loss, log_path: Path | None = None,
        amp: bool = False, desc: str = "train", max_grad_norm: float = 1.0, log_every: int = 0) -> dict:
    """The training loop of every stage (loss_fn(model, batch) -> (loss, parts), parts logged per epoch; DDP under
    torchrun); leaves the best-val-F1 weights in `model`, logs loss and lr every `log_every` steps."""
    check_range("epochs", epochs, 1)
    check_range("lr", lr, 0, low_open=True)
    check_range("patience", patience, 1)
    model.to(device)
    with data_parallel(device) as parallel:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None) if parallel else model
        train_loader = pinned(shard_loader(train_loader) if parallel else train_loader, device)
        optimizer = adamw(model, lr, weight_decay, device)
        scheduler = warmup_linear(optimizer, epochs * len(train_loader), warmup_frac)
        stopper, history, best_state, best_val = EarlyStopping(patience), [], None, None
        steps, group = curves.StepLog(curves.interval(len(train_loader), log_every)), device if parallel else None
        for epoch in range(1, epochs + 1):
            start = time.time()
            if parallel:
                train_loader.sampler.set_epoch(epoch)
            train = _train_epoch(net, train_loader, device, optimizer, scheduler, loss_fn, amp, max_grad_norm,
                                 f"{desc} epoch {epoch}/{epochs}", steps)
            val = evaluate(model, val_loader, device, amp, desc="val")
            steps.end_epoch(epoch, group)
            history.append(_epoch_row(epoch, train, val, optimizer.param_groups[0]["lr"], start, group))
            _report_epoch(desc, history, steps.rows, log_path)
            if stopper.step(val["macro_f1"], epoch):
                best_state, best_val = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}), val
            if stopper.should_stop:
                print(f"early stop: no val F1 gain for {patience} epochs (best epoch {stopper.best_epoch})")
                break
        # DDP's reducer holds the group: freed after the group is torn down, gloo's destructor waited forever
        del net
    model.load_state_dict(best_state)
    return {"history": history, "steps": steps.rows, "best_epoch": stopper.best_epoch, "val": best_val,
            "world_size": dist_env()[2]}


def _epoch_row(epoch: int, train: dict, val: dict, lr: float, start: float, group_device) -> dict:
    """One epoch's history row. Under DDP (group_device set) rank 0's figures, written into `val` too: every
    rank must take the same early-stopping decision."""
    if group_device is not None:
        *values, val["macro_f1"] = from_rank0([*train.values(), val["macro_f1"]], group_device)
        train = dict(zip(train, values))
    return {"epoch": epoch, "train_loss": train.pop("loss"), "val_loss": val["loss"], "val_f1": val["macro_f1"],
            "val_acc": val["accuracy"], "lr": lr, "seconds": round(time.time() - start, 2),
            **{f"train_{k}": v for k, v in train.items()}}


def _report_epoch(desc: str, history: list[dict], steps: list[dict], log_path: Path | None) -> None:
    """The epoch's summary line; the CSV logs rewritten (history, and the steps beside it) when there is a log_path."""
    row = history[-1]
    print(f"{desc} epoch {row['epoch']}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
          flush=True)
    if log_path:
        write_log(log_path, history)
        write_log(curves.steps_path(log_path), steps)


def _train_epoch(model, loader, device, optimizer, scheduler, loss_fn, amp, max_grad_norm, desc, steps=None) -> dict:
    """One pass; the mean loss and loss parts, weighted by batch size (and each step into `steps`, a StepLog).
    Sums stay on the device (float64, the same arithmetic as Python floats), so a step waits on no host sync."""
    model.train()
    sums, n = {"loss": torch.zeros((), dtype=torch.float64, device=device)}, 0
    for batch in tqdm(loader, desc=desc, mininterval=10, ascii=True):
        batch = to_device(batch, device)
        with batching.autocast(device, amp):
            loss, parts = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        size = len(batch["labels"])
        if steps is not None:
            steps.record(loss, size, optimizer.param_groups[0]["lr"])  # the lr this step used
        scheduler.step()
        for k, v in {"loss": loss, **parts}.items():
            sums[k] = sums.get(k, 0.0) + (v.detach().double() if torch.is_tensor(v) else v) * size
        n += size
    means = {k: float(v) / max(1, n) for k, v in sums.items()}
    if not np.isfinite(means["loss"]):
        raise FinCompressError(f"training loss became {means['loss']} at {desc}; lower lr or check the data")
    return means


def write_log(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def save_checkpoint(model, tokenizer, out_dir: Path, info: dict) -> None:
    """save_pretrained + tokenizer + checkpoint_info.json, all or nothing."""
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "checkpoint_info.json", info)


def public(metrics: dict) -> dict:
    """Drop the bulky arrays (logits) before a metrics dict goes to JSON."""
    return {k: v for k, v in metrics.items() if k != "logits"}


def train_teacher(data_dir: Path, out_dir: Path, log_path: Path, device, *, teacher: str, epochs: int, lr: float,
                  batch_size: int, max_length: int, weight_decay: float, warmup_frac: float, patience: int,
                  seed: int, amp: bool = False) -> dict:
    """Fine-tune the teacher, keep the best-val-F1 weights, evaluate on val and test, save."""
    check_range("batch_size", batch_size, 1)
    check_range("max_length", max_length, 8, 512)
    splits = load_splits(data_dir)
    model, tokenizer = load_classifier(teacher, attention_for(device))
    train_loader = make_loader(splits["train"], tokenizer, batch_size, max_length, shuffle=True, seed=seed)
    val_loader = make_loader(splits["val"], tokenizer, batch_size * 2, max_length)  # fit and evaluate pin on CUDA
    test_loader = make_loader(splits["test"], tokenizer, batch_size * 2, max_length)
    result = fit(model, train_loader, val_loader, device, epochs=epochs, lr=lr, weight_decay=weight_decay,
                 warmup_frac=warmup_frac, patience=patience, log_path=log_path, amp=amp, desc="teacher")
    val = result["val"]
    test = evaluate(model, test_loader, device, amp, desc="test")
    hparams = {"teacher": teacher, "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length,
               "weight_decay": weight_decay, "warmup_frac": warmup_frac, "patience": patience, "seed": seed,
               "world_size": result["world_size"]}
    info = {"hyperparameters": hparams, "best_epoch": result["best_epoch"], "val": public(val), "test": public(test),
            "labels": list(LABELS), "num_parameters": sum(p.numel() for p in model.parameters())}
    save_checkpoint(model.cpu(), tokenizer, out_dir, {k: v for k, v in info.items() if k not in ("val", "test")}
                    | {"val_macro_f1": val["macro_f1"], "test_macro_f1": test["macro_f1"]})
    return {**result, "val": val, "test": test, "info": info}
