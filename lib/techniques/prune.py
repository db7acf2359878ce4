"""Structured pruning: head/FFN-neuron importance, physical removal, a reloadable spec, prune-recover rounds."""
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, write_json, write_text_atomic
from lib.core.params import check_range
from lib.core.variants import SPEC_FILE
from lib.data import batching
from lib.data.batching import model_inputs, pinned, to_device
from lib.modeling.distributed import rank0_value


def layers(model):
    return model.base_model.encoder.layer


def get_spec(model) -> dict:
    """Original indices of the heads and FFN neurons each layer still has (full ranges if never pruned).

    Units are identified by their index in the unpruned model, so a heatmap or a later round can
    tell which ones survived; a removed unit has no weights left and cannot be scored again.
    """
    if getattr(model, "pruning_spec", None) is None:
        cfg = model.config
        model.pruning_spec = {"heads": [list(range(cfg.num_attention_heads)) for _ in layers(model)],
                              "neurons": [list(range(cfg.intermediate_size)) for _ in layers(model)]}
    return model.pruning_spec


def unit_counts(model) -> dict:
    """Heads and intermediate size per layer, read from the actual module shapes."""
    return {"heads": [l.attention.self.num_attention_heads for l in layers(model)],
            "neurons": [l.intermediate.dense.out_features for l in layers(model)]}


def _slice_linear(linear: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (dim 0) or input columns (dim 1) `idx` of `linear`."""
    w = linear.weight.detach().index_select(dim, idx.to(linear.weight.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            new.bias.copy_(linear.bias[idx] if dim == 0 else linear.bias)
    return new


def _keep(n: int, remove, what: str, layer: int) -> list[int]:
    gone = set(int(i) for i in remove)
    if any(not 0 <= i < n for i in gone):
        raise FinCompressError(f"layer {layer} has {n} {what}; cannot remove indices {sorted(gone)}")
    keep = [i for i in range(n) if i not in gone]
    if not keep:
        # A BERT layer with no head cannot reshape its attention output; keep at least one.
        raise FinCompressError(f"removing all {n} {what} of layer {layer} is not supported; keep at least one")
    return keep


def remove_heads(model, layer: int, heads) -> None:
    """Physically drop heads (indices among the layer's current heads): Q/K/V rows and output-dense columns."""
    att = layers(model)[layer].attention
    d = att.self.attention_head_size
    keep = _keep(att.self.num_attention_heads, heads, "heads", layer)
    rows = torch.tensor([h * d + j for h in keep for j in range(d)])
    for name in ("query", "key", "value"):
        setattr(att.self, name, _slice_linear(getattr(att.self, name), rows, 0))
    att.output.dense = _slice_linear(att.output.dense, rows, 1)
    # BertSelfAttention reshapes with (-1, head_size), so only these two attributes track the head count.
    att.self.num_attention_heads, att.self.all_head_size = len(keep), len(keep) * d
    spec = get_spec(model)["heads"]
    spec[layer] = [spec[layer][h] for h in keep]


def remove_neurons(model, layer: int, neurons) -> None:
    """Physically drop FFN neurons: intermediate-dense rows/bias and output-dense columns."""
    block = layers(model)[layer]
    keep = torch.tensor(_keep(block.intermediate.dense.out_features, neurons, "FFN neurons", layer))
    block.intermediate.dense = _slice_linear(block.intermediate.dense, keep, 0)
    block.output.dense = _slice_linear(block.output.dense, keep, 1)
    spec = get_spec(model)["neurons"]
    spec[layer] = [spec[layer][i] for i in keep.tolist()]


def prune_units(model, heads: list[list[int]], neurons: list[list[int]]) -> None:
    """Remove per-layer lists of current-local head and neuron indices."""
    for i, (h, n) in enumerate(zip(heads, neurons)):
        if len(h):
            remove_heads(model, i, h)
        if len(n):
            remove_neurons(model, i, n)


@contextmanager
def gates(model):
    """Multiplicative gates (value 1) on every head's output and every FFN neuron, one per example.

    transformers 5 has no head_mask, so hooks multiply the attention output (before its dense
    projection) and the intermediate activations; d loss / d gate is the Taylor importance. Gates are
    fp32 even under bf16 autocast, so their gradients keep full precision when summed over many examples.
    """
    store = {"heads": [None] * len(layers(model)), "neurons": [None] * len(layers(model))}

    def head_hook(i, d):
        def hook(module, args):
            x = args[0]
            g = torch.ones(x.shape[0], 1, x.shape[-1] // d, 1, device=x.device, dtype=torch.float32, requires_grad=True)
            store["heads"][i] = g
            return ((x.unflatten(-1, (-1, d)) * g).flatten(-2),) + tuple(args[1:])
        return hook

    def neuron_hook(i):
        def hook(module, args, out):
            g = torch.ones(out.shape[0], 1, out.shape[-1], device=out.device, dtype=torch.float32, requires_grad=True)
            store["neurons"][i] = g
            return out * g
        return hook

    handles = []
    for i, block in enumerate(layers(model)):
        d = block.attention.self.attention_head_size
        handles.append(block.attention.output.dense.register_forward_pre_hook(head_hook(i, d)))
        handles.append(block.intermediate.register_forward_hook(neuron_hook(i)))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def taylor_importance(loader, device, batches: int = 16, amp: bool = False) -> Callable:
    """model -> per-layer scores of the heads and neurons it has now (higher means keep): the sum over examples
    of |dL/dgate| on `loader`'s gold labels (Michel et al. 2019). amp: bf16 autocast on CUDA, as in training."""
    check_range("importance_batches", batches, 1)
    return lambda model: _gate_scores(model, loader, device, batches, amp, heads_by_entropy=False)


def entropy_importance(loader, device, batches: int = 16, amp: bool = False) -> Callable:
    """As taylor_importance, but heads scored by minus their mean attention entropy (diffuse heads go first);
    neurons keep Taylor scores. The model must return attention maps (eager attention)."""
    check_range("importance_batches", batches, 1)
    return lambda model: _gate_scores(model, loader, device, batches, amp, heads_by_entropy=True)


IMPORTANCE = {"taylor": taylor_importance, "entropy": entropy_importance}  # stage 04's `importance` parameter


def _gate_scores(model, loader, device, batches: int, amp: bool, heads_by_entropy: bool) -> dict:
    model.eval()  # no dropout: scores must reflect the deterministic model
    counts = unit_counts(model)
    # Sums stay on the device until the end: no host sync per batch.
    heads = [torch.zeros(n, device=device) for n in counts["heads"]]
    neurons = [torch.zeros(n, device=device) for n in counts["neurons"]]
    with gates(model) as g:
        for b, batch in enumerate(pinned(loader, device)):
            if b >= batches:
                break
            batch = to_device(batch, device)
            with batching.autocast(device, amp):
                out = model(**model_inputs(batch), output_attentions=heads_by_entropy)
            loss = F.cross_entropy(out.logits.float(), batch["labels"])
            grads = torch.autograd.grad(loss, g["heads"] + g["neurons"])
            # Per-example gates: |grad| per example, then summed, so opposite signs cannot cancel.
            for i, grad in enumerate(grads[len(heads):]):
                neurons[i] += grad.abs().sum((0, 1))
            if heads_by_entropy:
                _add_entropy(heads, out.attentions, batch["attention_mask"])
                continue
            for i, grad in enumerate(grads[:len(heads)]):
                heads[i] += grad.abs().sum((0, 1, 3))
    return {"heads": [h.cpu() for h in heads], "neurons": [n.cpu() for n in neurons]}


def _add_entropy(heads: list, attentions, mask) -> None:
    """Subtract each head's attention entropy, summed over real (non-padding) query tokens."""
    if not attentions:
        raise FinCompressError("entropy importance needs attention maps; load the model with attn_implementation='eager'")
    m = mask.float()[:, None, :]
    for i, att in enumerate(attentions):
        ent = -(att.float() * att.float().clamp_min(1e-12).log()).sum(-1)
        heads[i] -= (ent * m).sum((0, 2)).detach()


def select_lowest(scores: list[torch.Tensor], n_remove: int, min_keep: int = 1) -> list[list[int]]:
    """The globally lowest-scoring units, scores L2-normalised per layer (Michel et al.); >= min_keep per layer."""
    order = sorted((float(s[i] / (s.norm() + 1e-12)), layer, i) for layer, s in enumerate(scores) for i in range(len(s)))
    left, out = [len(s) for s in scores], [[] for _ in scores]
    for _, layer, i in order:
        if n_remove <= 0:
            break
        if left[layer] > min_keep:
            out[layer].append(i)
            left[layer] -= 1
            n_remove -= 1
    return out


def prunable_params(model) -> int:
    """Weights structured pruning can remove: Q/K/V, attention output and FFN matrices (+ their sliced biases)."""
    n = 0
    for block in layers(model):
        att = block.attention
        n += sum(p.numel() for m in (att.self.query, att.self.key, att.self.value) for p in m.parameters())
        n += att.output.dense.weight.numel() + block.output.dense.weight.numel()
        n += sum(p.numel() for p in block.intermediate.dense.parameters())
    return n


def originals(model) -> dict:
    """Head and neuron totals of the unpruned architecture, the base of every sparsity fraction."""
    n = len(layers(model))
    return {"heads": n * model.config.num_attention_heads, "neurons": n * model.config.intermediate_size}


def prune_step(model, importance: Callable, head_target: int, neuron_target: int) -> dict:
    """Score the units still present (importance(model)) and remove the weakest until `*_target` units are gone
    in total."""
    full, now = originals(model), unit_counts(model)
    n_heads = head_target - (full["heads"] - sum(now["heads"]))
    n_neurons = neuron_target - (full["neurons"] - sum(now["neurons"]))
    scores = importance(model)
    picked = {"heads": select_lowest(scores["heads"], n_heads), "neurons": select_lowest(scores["neurons"], n_neurons)}
    # Under a launcher every rank removes rank 0's choice (as early stopping takes rank 0's val F1): scores
    # that differ in their last bits between ranks would otherwise give them models of different shapes.
    picked = rank0_value(picked)
    spec = get_spec(model)
    removed = {k: [[spec[k][l][i] for i in idx] for l, idx in enumerate(v)] for k, v in picked.items()}
    prune_units(model, picked["heads"], picked["neurons"])
    return removed


def prune_to(model, importance: Callable, *, head_fraction: float, ffn_fraction: float, rounds: int,
             recover: Callable, desc: str = "prune") -> list[dict]:
    """Iterative prune-then-recover from the current sparsity to the target fractions of the original units.

    importance(model) scores the units (taylor_importance, entropy_importance, or any callable of that shape);
    recover(model, round) fine-tunes after each round, as the caller chooses, and returns at least the model's
    val_macro_f1 (with no recovery, just that score)."""
    check_range("head_fraction", head_fraction, 0, 1)
    check_range("ffn_fraction", ffn_fraction, 0, 1)
    check_range("rounds", rounds, 1)
    full, now = originals(model), unit_counts(model)
    start = {"heads": full["heads"] - sum(now["heads"]), "neurons": full["neurons"] - sum(now["neurons"])}
    goal = {"heads": round(head_fraction * full["heads"]), "neurons": round(ffn_fraction * full["neurons"])}
    log = []
    for r in range(1, rounds + 1):
        target = {k: start[k] + round((goal[k] - start[k]) * r / rounds) for k in goal}
        removed = prune_step(model, importance, target["heads"], target["neurons"])
        entry = {"round": r, "removed": removed, "counts": unit_counts(model), **recover(model, r)}
        print(f"{desc} round {r}/{rounds}: heads {sum(entry['counts']['heads'])}/{full['heads']}, neurons "
              f"{sum(entry['counts']['neurons'])}/{full['neurons']}, val macro-F1 {entry['val_macro_f1']:.4f}", flush=True)
        log.append(entry)
    return log


def save_pruned(model, tokenizer, out_dir: Path, info: dict | None = None) -> None:
    """save_pretrained weights + tokenizer + the pruning spec that restores the shapes, all or nothing."""
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        spec = {**{f"{k}_per_layer": v for k, v in unit_counts(model).items()}, **get_spec(model)}
        # Compact: thousands of neuron indices pretty-printed would add tens of KB to the shipped folder.
        write_text_atomic(tmp / SPEC_FILE, json.dumps(spec, separators=(",", ":")) + "\n")
        if info:
            write_json(tmp / "checkpoint_info.json", info)


def load_pruned(path, attn_implementation: str = "eager"):
    """Rebuild the pruned architecture from config + spec, then load its weights (strict)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification
    path = Path(path)
    if not (path / SPEC_FILE).is_file() or not (path / "config.json").is_file():
        raise FinCompressError(f"{path} is not a pruned checkpoint (needs config.json and {SPEC_FILE}); run stage 04 first")
    manifest.check(path)
    spec = json.loads((path / SPEC_FILE).read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation)
    if len(spec["heads"]) != len(layers(model)):
        raise FinCompressError(f"{path / SPEC_FILE} describes {len(spec['heads'])} layers, config has {len(layers(model))}")
    for i, (heads, neurons) in enumerate(zip(spec["heads"], spec["neurons"])):
        remove_heads(model, i, sorted(set(range(config.num_attention_heads)) - set(heads)))
        remove_neurons(model, i, sorted(set(range(config.intermediate_size)) - set(neurons)))
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    model.load_state_dict(state, strict=True)
    return model.eval()
