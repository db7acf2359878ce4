"""lib/techniques/prune.py: exact removal, parameter accounting, no re-selection, reload, bad input."""
import json

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lib import formats
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.data import batching
from lib.data.batching import make_loader
from lib.modeling import losses
from lib.techniques import prune
from tests.conftest import launch_ranks

HIDDEN, HEADS, HEAD_DIM, FFN, LAYERS = 32, 4, 8, 64, 3
CPU = torch.device("cpu")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FFN, num_labels=3, max_position_embeddings=64, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def loader(tokenizer):
    texts = ["Profit rose sharply", "Sales fell by a third", "The board met on Monday", "Shares jumped 5%",
             "Losses widened again", "Company X names new CFO", "Revenue beat forecasts", "Margins shrank"] * 2
    df = pd.DataFrame({"text": texts, "label": [2, 0, 1, 2, 0, 1, 2, 0] * 2})
    return make_loader(df, tokenizer, batch_size=8, max_length=16)


def inputs():
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(1000, 2000, (3, 9), generator=g), "attention_mask": mask}


@torch.no_grad()
def logits(model):
    return model(**inputs()).logits


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_removing_zeroed_units_leaves_logits_unchanged():
    model = tiny_model()
    block0, block2 = prune.layers(model)[0], prune.layers(model)[2]
    with torch.no_grad():  # a head whose output projection columns are zero contributes nothing
        block0.attention.output.dense.weight[:, 1 * HEAD_DIM:2 * HEAD_DIM] = 0
        block2.attention.output.dense.weight[:, 3 * HEAD_DIM:] = 0
        block0.output.dense.weight[:, [5, 17, 63]] = 0
    before = logits(model)
    prune.prune_units(model, [[1], [], [3]], [[5, 17, 63], [], []])
    assert torch.allclose(before, logits(model), atol=1e-5)
    assert prune.unit_counts(model) == {"heads": [3, 4, 3], "neurons": [61, 64, 64]}
    assert block0.attention.self.query.weight.shape == (3 * HEAD_DIM, HIDDEN)


def test_removing_a_live_head_changes_logits():
    # Guards the test above: if removal were a no-op on the computation, this would fail.
    model = tiny_model()
    before = logits(model)
    prune.prune_units(model, [[0], [], []], [[], [], []])
    assert not torch.allclose(before, logits(model), atol=1e-4)


def test_parameter_count_drops_by_exact_amount():
    model = tiny_model()
    start = n_params(model)
    prune.prune_units(model, [[0, 2], [1], []], [[0, 1, 2], [], [10]])
    per_head = 3 * (HIDDEN * HEAD_DIM + HEAD_DIM) + HIDDEN * HEAD_DIM  # Q/K/V rows + bias, output columns
    per_neuron = HIDDEN + 1 + HIDDEN  # intermediate row + bias, output column
    assert start - n_params(model) == 3 * per_head + 4 * per_neuron


def test_cannot_remove_every_head_of_a_layer():
    with pytest.raises(FinCompressError, match="keep at least one"):
        prune.prune_units(tiny_model(), [list(range(HEADS)), [], []], [[], [], []])


def test_taylor_scores_a_dead_head_zero_and_picks_it_first(loader):
    model = tiny_model()
    with torch.no_grad():
        prune.layers(model)[1].attention.output.dense.weight[:, 2 * HEAD_DIM:3 * HEAD_DIM] = 0
    scores = prune.taylor_importance(loader, CPU, batches=2)(model)
    assert [len(s) for s in scores["heads"]] == [HEADS] * LAYERS
    assert scores["heads"][1][2] == 0 and (scores["heads"][0] > 0).all()
    assert prune.select_lowest(scores["heads"], 1) == [[], [2], []]


def test_entropy_scores_a_uniform_head_lowest(loader):
    model = tiny_model()
    with torch.no_grad():  # zero queries: every score is equal, attention is uniform, entropy is maximal
        q = prune.layers(model)[0].attention.self.query
        q.weight[3 * HEAD_DIM:] = 0
        q.bias[3 * HEAD_DIM:] = 0
    heads = prune.entropy_importance(loader, CPU, batches=1)(model)["heads"][0]
    assert int(heads.argmin()) == 3


def test_select_lowest_keeps_one_unit_per_layer():
    scores = [torch.tensor([0.0, 0.0]), torch.tensor([5.0, 6.0, 7.0])]
    picked = prune.select_lowest(scores, 3)
    assert len(picked[0]) == 1 and sum(map(len, picked)) == 3


def test_removed_units_are_not_selected_again(loader):
    model = tiny_model()
    importance = prune.taylor_importance(loader, CPU, batches=2)
    first = prune.prune_step(model, importance, head_target=3, neuron_target=40)
    # Scores exist only for the units still present: removed ones are gone, not masked.
    scores = importance(model)
    assert [len(s) for s in scores["heads"]] == prune.unit_counts(model)["heads"]
    second = prune.prune_step(model, importance, head_target=6, neuron_target=80)
    for kind in ("heads", "neurons"):
        for a, b in zip(first[kind], second[kind]):
            assert not set(a) & set(b)
        assert sum(map(len, first[kind])) == (3 if kind == "heads" else 40)
        assert sum(map(len, second[kind])) == (3 if kind == "heads" else 40)
    spec = prune.get_spec(model)
    for layer, kept in enumerate(spec["heads"]):
        assert set(kept).isdisjoint(first["heads"][layer] + second["heads"][layer])
        assert len(kept) + len(first["heads"][layer]) + len(second["heads"][layer]) == HEADS


def test_prune_to_reaches_target_and_calls_recover_after_each_round(loader):
    model, seen = tiny_model(), []

    def recover(m, r):  # the caller's fine-tuning; here it only sees what each round left
        seen.append((r, sum(prune.unit_counts(m)["heads"])))
        return {"val_macro_f1": 0.5, "history": [r]}
    log = prune.prune_to(model, prune.taylor_importance(loader, CPU, batches=1), head_fraction=0.5, ffn_fraction=0.25,
                         rounds=2, recover=recover)
    counts = prune.unit_counts(model)
    assert sum(counts["heads"]) == 6 and sum(counts["neurons"]) == 144
    assert seen == [(1, 9), (2, 6)] and [e["history"] for e in log] == [[1], [2]]


def test_stage04_recovery_trains_with_kd_and_logs_each_round(loader, tmp_path):
    from lib.stages import pruning
    model = tiny_model()
    loss_fn = losses.precomputed_kd_loss(torch.zeros(len(loader.dataset), 3), alpha=0.5, temperature=2.0)
    recover = pruning.recoverer(loader, loader, CPU, {"recovery_epochs": 1, "lr": 1e-3}, loss_fn, tmp_path, "prune", False)
    log = prune.prune_to(model, prune.taylor_importance(loader, CPU, batches=1), head_fraction=0.5, ffn_fraction=0.25,
                         rounds=2, recover=recover)
    assert len(log) == 2 and (tmp_path / "prune_round2.csv").is_file() and len(log[1]["history"]) == 1
    scored = pruning.recoverer(loader, loader, CPU, {"recovery_epochs": 0, "lr": 1e-3}, loss_fn, tmp_path, "x", False)
    assert set(scored(model, 1)) == {"val_macro_f1"} and not (tmp_path / "x_round1.csv").exists()


def test_recovery_reads_unlabeled_transfer_rows_while_scoring_reads_gold_labels(loader, tokenizer, monkeypatch):
    labeled = pd.DataFrame({"text": ["Profit rose sharply", "Sales fell by a third"] * 4, "label": [2, 0] * 4})
    transfer = pd.DataFrame({"text": ["Analysts see a strong quarter", "Orders slowed in March"] * 4, "label": -1})
    kd = make_loader(pd.concat([labeled, transfer], ignore_index=True), tokenizer, batch_size=8, max_length=16)
    from lib.stages import pruning
    scored, trained = [], []
    real_scores = prune._gate_scores
    monkeypatch.setattr(prune, "_gate_scores", lambda m, ld, *a, **k: scored.append(ld) or real_scores(m, ld, *a, **k))
    real_fit = pruning.fit
    monkeypatch.setattr(pruning, "fit", lambda m, ld, *a, **k: trained.append(ld) or real_fit(m, ld, *a, **k))
    table = torch.zeros(len(kd.dataset), 3)
    recover = pruning.recoverer(kd, loader, CPU, {"recovery_epochs": 1, "lr": 1e-3}, losses.precomputed_kd_loss(table, 0.7, 2.0),
                                None, "prune", False)
    prune.prune_to(tiny_model(), prune.taylor_importance(loader, CPU, batches=1), head_fraction=0.25, ffn_fraction=0.25,
                   rounds=1, recover=recover)
    assert scored == [loader] and trained == [kd]  # Taylor scores need gold labels; the KD term reads label -1 rows
    assert (torch.cat([b["labels"] for b in kd]) == -1).sum() == 8


@pytest.mark.parametrize("kwargs", [{"head_fraction": 1.5}, {"ffn_fraction": -0.1}, {"rounds": 0}])
def test_prune_to_rejects_bad_parameters(loader, kwargs):
    args = {"head_fraction": 0.5, "ffn_fraction": 0.5, "rounds": 1, **kwargs}
    with pytest.raises(FinCompressError, match="out of range"):
        prune.prune_to(tiny_model(), prune.taylor_importance(loader, CPU, batches=1), recover=lambda m, r: {}, **args)


def test_pruned_model_reloads_with_same_shapes_and_logits(tmp_path, tokenizer):
    model = tiny_model()
    prune.prune_units(model, [[0], [1, 2], []], [[3, 4], [], list(range(50))])
    prune.save_pruned(model, tokenizer, tmp_path / "pruned")
    spec = json.loads((tmp_path / "pruned" / prune.SPEC_FILE).read_text())
    assert spec["heads"][1] == [0, 3] and spec["heads_per_layer"] == [3, 2, 4]
    loaded = prune.load_pruned(tmp_path / "pruned")
    assert prune.unit_counts(loaded) == prune.unit_counts(model)
    assert prune.get_spec(loaded) == prune.get_spec(model)
    assert torch.allclose(logits(model), logits(loaded), atol=1e-6)
    predict, tok = formats.load(Variant("pruned", "pruned", "pruned"), tmp_path)
    assert torch.allclose(predict(inputs()), logits(model), atol=1e-6) and tok.vocab_size == tokenizer.vocab_size


def test_pruned_variants_serve_with_sdpa_and_train_with_eager(tmp_path, tokenizer, monkeypatch):
    """Timed and served like the hf teacher (SDPA; eager cost a 50% level 17% in stage 05's harness), while the
    float module for training keeps eager attention, whose maps entropy importance reads."""
    prune.save_pruned(tiny_model(), tokenizer, tmp_path / "pruned")
    seen, real = [], prune.load_pruned
    monkeypatch.setattr(prune, "load_pruned", lambda p, attn_implementation="eager": seen.append(attn_implementation)
                        or real(p, attn_implementation))
    formats.load(Variant("pruned", "pruned", "pruned"), tmp_path)
    assert formats.load_torch(Variant("pruned", "pruned", "pruned"), tmp_path).config._attn_implementation == "eager"
    assert seen == ["sdpa", "eager"]


def test_load_pruned_rejects_a_plain_checkpoint(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(FinCompressError, match="not a pruned checkpoint"):
        prune.load_pruned(tmp_path)


PRUNE_RANKS = """
import json, os, torch
from lib.techniques import prune
from tests.test_prune import tiny_model
rank = int(os.environ["RANK"])

def rank_scores(model, *args, **kwargs):  # as if each rank's GPU had summed its gradients differently
    g, counts = torch.Generator().manual_seed(rank), prune.unit_counts(model)
    return {k: [torch.rand(n, generator=g) for n in counts[k]] for k in ("heads", "neurons")}

model = tiny_model()
scores = rank_scores(model)
own = {"heads": prune.select_lowest(scores["heads"], 4), "neurons": prune.select_lowest(scores["neurons"], 50)}
removed = prune.prune_step(model, rank_scores, head_target=4, neuron_target=50)
json.dump({"own": own, "removed": removed, "spec": prune.get_spec(model), "counts": prune.unit_counts(model)},
          open(os.path.join(os.environ["OUT"], f"rank{rank}.json"), "w"))
"""


def test_pruning_choice_is_rank0s_on_every_rank(tmp_path):
    """Two gloo ranks whose importance scores differ: both remove rank 0's choice, so their shapes match."""
    r0, r1 = launch_ranks(PRUNE_RANKS, tmp_path)
    assert r0["own"] != r1["own"]  # guard: left to themselves the ranks would build different models
    assert r0["removed"] == r1["removed"] and r0["spec"] == r1["spec"] and r0["counts"] == r1["counts"]
    assert r1["removed"]["heads"] == r0["own"]["heads"]  # unpruned model: local indices are the original ones
    assert sum(r1["counts"]["heads"]) == LAYERS * HEADS - 4


def test_prune_to_under_gpu_runs_every_loop_in_bf16_autocast(loader, monkeypatch):
    """--gpu: importance scoring, recovery training and evaluation all enter bf16 autocast (CUDA's autocast is
    swapped for the CPU's, as in test_train, since there is no GPU here)."""
    entered = []

    def spy(device, enabled):
        entered.append(enabled)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)
    monkeypatch.setattr(batching, "autocast", spy)
    dtypes = []
    model = tiny_model()
    model.classifier.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    loss_fn = losses.precomputed_kd_loss(torch.zeros(len(loader.dataset), 3), alpha=0.5, temperature=2.0)
    from lib.stages import pruning
    recover = pruning.recoverer(loader, loader, CPU, {"recovery_epochs": 1, "lr": 1e-3}, loss_fn, None, "prune", True)
    log = prune.prune_to(model, prune.taylor_importance(loader, CPU, batches=1, amp=True), head_fraction=0.25,
                         ffn_fraction=0.25, rounds=1, recover=recover)
    # 1 importance batch + 2 training steps + 2 val batches (evaluate), every one with autocast enabled
    assert entered == [True] * 5 and set(dtypes) == {torch.bfloat16}
    assert sum(log[0]["counts"]["heads"]) == LAYERS * HEADS - 3
    assert all(p.dtype == torch.float32 for p in model.parameters())
