# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Quantization
#
# INT8 stores each weight in one byte instead of four and lets the CPU use integer matrix
# instructions. Both the **teacher** (stage 01) and the **best student** (stage 02) are quantized
# five ways, each saved to disk, reloaded, and measured against its own FP32 PyTorch model:
#
# * **PyTorch dynamic INT8** (`torch_int8`): Linear weights INT8 per output channel, activations
#   quantized per batch at run time; embedding rows INT8 with a scale per row (they are over half
#   of a small BERT's bytes, so leaving them FP32 would cap the size gain below 2x).
# * **ONNX FP32** (`onnx`): the same model as an ONNX graph with dynamic batch and sequence axes,
#   checked against PyTorch on a padded batch. Not INT8: it shows what the runtime alone buys. A BERT
#   classifier is written straight from its weights with ONNX Runtime's fused `Attention` op (one node
#   per attention block instead of about 13: at batch 1 a small BERT's time is per-node overhead);
#   other architectures go through `torch.onnx.export`.
# * **ONNX Runtime dynamic INT8** (`onnx`): MatMul and fused-attention weights and the word and
#   token-type embedding tables INT8.
# * **ONNX Runtime static INT8** (`onnx`): the same weights, but every activation scale fixed once from
#   `calibration_n` training sentences (MinMax, Entropy and Percentile are each tried; the one best on
#   validation F1 is kept), so a sentence's label no longer depends on its batch-mates. ORT's QDQ path
#   leaves the fused attention FP32; it is rewritten to `QAttention` with a calibrated input scale.
# * **QAT INT8** (`torch_int8`): a short fine-tuning in which the Linear layers see their INT8
#   rounding (straight-through estimator), then the same conversion as PTQ. Its F1 is that of the
#   converted INT8 model that ships.
#
# A per-group **sensitivity** scan on validation decides what stays FP32: groups are kept FP32 one
# at a time, those whose INT8 version changes the logits most per weight first, until the INT8 model
# is within `max_f1_drop_pts` of FP32 on val. The same budget, on val, is the stage's F1 goal, next to
# `min_speedup` and `min_size_ratio`; the INT8 variant each model would ship is chosen on val too. Test
# data is only reported: its delta to FP32 (negative = worse) comes with a paired bootstrap 95% interval
# and the bootstrap p of "no difference"; a variant is *better* or *worse* than its FP32 source only where
# that p, **Holm-adjusted over every variant of this page compared with its FP32 source** (both models'
# variants: one family), is below 0.05, else *indistinguishable from its FP32 source*. Sizes are MB on disk
# of the saved folder (weights, config, tokenizer).
#
# **Training seeds.** The teacher is one model. The student is one model per stage-02 training seed: the
# sensitivity scan runs on the exported seed, and its choices (the FP32 groups of each runtime) are applied to
# every seed's model, so each PTQ variant exists once per seed; the calibration method is chosen on the seeds'
# mean val, and a variant's val Δ is the mean over seeds of each seed's INT8 minus that seed's FP32. QAT runs
# `seeds` times from the exported FP32 model. Stage 05 reads the same seeds when it decides what ships.

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/ and reports/ are, stages 01 and 02 are read from here
student_dir = ""  # empty reads the best student from stage 02, none skips it, else a model folder
gpu = False  # run the QAT fine-tuning on CUDA, INT8 inference is always on the CPU
seed = 42  # seed for QAT shuffling and calibration sampling [in 0..4294967295]
seeds = 3  # QAT training seeds per model (seed, seed+1, ...): QAT is judged on their mean val, the median seed on val exported [in 1..32] [smoke 2]
per_channel = True  # PyTorch INT8 weight scale per output channel, else one per tensor
# One of the ~36 smoke val sentences moves F1 by ~3 points, hence the wider smoke budget.
max_f1_drop_pts = 0.5  # goal and budget: macro-F1 points INT8 may lose vs FP32 (val picks FP32 groups and is judged) [min 0] [smoke 5.0]
min_speedup = 2.0  # goal: batch-1 speed-up of the shipped INT8 variant over its FP32 source [min 0]
min_size_ratio = 3.0  # goal: times smaller on disk than its FP32 source [min 0]
qat_epochs = 1  # fake-quant fine-tuning epochs [min 1]
qat_lr = 1e-5  # AdamW peak learning rate for QAT [above 0]
max_length = 128  # tokens for evaluation and QAT batches [in 8..512] [smoke 48]
latency_seq_len = 32  # batch-1 latency inputs are real test sentences padded or cut to this length [in 8..512]
latency_n = 64  # real test sentences timed one at a time [min 1] [smoke 4]
threads = 2  # CPU threads for PyTorch and ONNX Runtime timing [in 1..256]
calibration_n = 256  # training sentences static ONNX INT8 calibrates its activation scales on [min 1] [smoke 16]
parity_tol = 1e-4  # largest max abs logit difference allowed between ONNX FP32 and PyTorch [above 0]

# %%
from IPython.display import Markdown, display

from lib.report import int8, plots, render
from lib.stages import quantization
from lib.techniques import quantize_static as qs

stage = quantization.Stage(globals())
stage.pick_models()
display(Markdown(stage.describe()))

# %% [markdown]
# ## Teacher
# Sensitivity scan, PTQ, ONNX export and INT8, QAT; every artifact reloaded from disk and measured.

# %%
stage.quantize_teacher();

# %% [markdown]
# ## Student

# %%
stage.quantize_student();

# %% [markdown]
# ## QAT training curves
# Quantization-aware training fine-tunes each model with fake-quantized Linear layers at `qat_lr`: training
# loss (cross-entropy) and learning rate per optimizer step, validation macro-F1 (with fake quantization)
# after each epoch; the dashed line is the FP32 source's val macro-F1. With `seeds` above 1, QAT runs once per
# seed: the curves are the exported seed's (the median on val).

# %%
plots.plot_training({f"{r['name']} QAT": r["qat"] for r in stage.results}, "Quantization-aware training");

# %% [markdown]
# ## Training seeds
# Every model this stage has more than one of: the student's FP32 seeds (stage 02) and each PTQ variant made
# from them, and each model's QAT seeds. Val Δ and the goals read the mean val; test and OOD-val are reported.

# %%
display(plots.table(stage.seed_table(), caption="Over training seeds: mean ± sd (min-max) of macro-F1. A PTQ "
                    "variant exports the seed its FP32 source exported (stage 02's median on val); QAT the median on val."))
stage.plot_seeds();

# %% [markdown]
# ## Sensitivity: which groups can be INT8
# One group INT8 at a time (everything else FP32), on validation; `all` is every group at once.
# Red groups are the ones the default keeps FP32 in PyTorch INT8. Logit differences are against the
# FP32 model. ONNX Runtime INT8 (8-bit activations where PyTorch's x86 kernels use 7) repeats the greedy
# choice in the same order on its own val F1, so it may keep fewer groups FP32.

# %%
int8.plot_sensitivity(stage.results, max_f1_drop_pts);

# %%
for r in stage.results:
    display(Markdown(f"**{r['name']}**: full INT8 with the kept groups reads {r['val_delta_pts_with_keep']:+.2f} val "
                     f"points vs FP32 in PyTorch; ONNX Runtime keeps {', '.join(r['onnx_keep_fp32_groups']) or 'nothing'} "
                     f"FP32 and reads {r['onnx_val_delta_pts_with_keep']:+.2f}"))
    display(plots.table(int8.sensitivity_table(r), caption=f"{r['name']}: validation macro-F1 with one "
                        "group of modules INT8 at a time (the rest FP32), against the FP32 model."))

# %% [markdown]
# ## Accuracy, size and speed
# Val and test macro-F1, MB on disk, batch-1 latency (real tokens, pinned threads) for every variant
# next to its FP32 PyTorch source. `Δ` is variant minus FP32 in points (negative = worse); `on test`
# reads the Holm-adjusted bootstrap p (the header gives the family's size) at alpha 0.05. `agreement` is the share of test sentences where the variant predicts
# the same class as FP32. `goals (val)`: every goal of this stage met on validation.

# %%
int8.plot_tradeoffs(stage.results);

# %%
for r in stage.results:
    display(plots.table(int8.variants_table(r), caption=f"{r['name']} and its INT8 variants: Δ = variant "
                        f"minus FP32 in macro-F1 points; latency, {render.in_stage_timing(stage.params)}."))
    display(Markdown(f"ONNX export parity ({r['name']}, padded batch {r['onnx_parity']['batch_shape']}): max |logit "
                     f"diff| {r['onnx_parity']['max_abs_diff']:.2e}, agreement {r['onnx_parity']['agreement']:.0%}"))

# %% [markdown]
# ## Static INT8: which calibration
# Each calibration method's static INT8 model beside dynamic INT8. Validation picks the method (for the
# student, its mean over the training seeds); test is reported. Under each line: the projections ONNX Runtime runs as INT8 kernels once it has loaded the graph.

# %%
for r in stage.results:
    display(plots.table(int8.calibration_table(r), caption=f"{r['name']}: static INT8 by calibration "
                        "method beside dynamic INT8; validation chooses, test is reported."))
    display(Markdown(f"**{r['name']}**: static {qs.int8_summary(r['onnx_ops']['static'])} · dynamic "
                     f"{qs.int8_summary(r['onnx_ops']['dynamic'])}"))

# %% [markdown]
# ## Where the INT8 models err
# Test confusion matrices of the FP32 source and its INT8 variants.

# %%
for r in stage.results:
    plots.plot_confusions(int8.int8_confusions(r));

# %% [markdown]
# ## Verdict

# %%
display(Markdown(stage.finish().verdict))
