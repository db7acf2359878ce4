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
# four ways, each saved to disk, reloaded, and measured against its own FP32 PyTorch model:
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
# * **QAT INT8** (`torch_int8`): a short fine-tuning in which the Linear layers see their INT8
#   rounding (straight-through estimator), then the same conversion as PTQ. Its F1 is that of the
#   converted INT8 model that ships.
#
# A per-group **sensitivity** scan on validation decides what stays FP32: groups are kept FP32 one
# at a time, those whose INT8 version changes the logits most per weight first, until the INT8 model
# is within `max_f1_drop_pts` of FP32 on val. Test data is only used for the final figures. Sizes are
# bytes on disk of the saved folder (weights, config, tokenizer).

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/ and reports/ are; stages 01 and 02 are read from here
student_dir = ""  # empty reads the best student from stage 02
gpu = False  # run the QAT fine-tuning on CUDA, INT8 inference is always on the CPU
seed = 42  # seed for QAT shuffling
per_channel = True  # PyTorch INT8 weight scale per output channel, else one per tensor
max_f1_drop_pts = 0.5  # val macro-F1 points INT8 may lose before groups are kept FP32
qat_epochs = 1  # fake-quant fine-tuning epochs
qat_lr = 1e-5  # AdamW peak learning rate for QAT
max_length = 128  # tokens for evaluation and QAT batches
latency_n = 64  # test sentences timed at batch 1 and 32 tokens
threads = 2  # CPU threads for PyTorch and ONNX Runtime timing
parity_tol = 1e-4  # largest max abs logit difference allowed between ONNX FP32 and PyTorch

# %%
from IPython.display import Markdown, display

from lib import common, report, quantize_study as qs

run = common.start_stage("03_quantization", globals())
models = qs.sources(run["root"], student_dir)
display(Markdown(", ".join(f"**{name}**: `{path}`" for name, path in models)))

# %% [markdown]
# ## Teacher
# Sensitivity scan, PTQ, ONNX export and INT8, QAT; every artifact reloaded from disk and measured.

# %%
results = [qs.quantize_model(*models[0], run["root"], run["data"], run["device"], run["params"])]

# %% [markdown]
# ## Student

# %%
results.append(qs.quantize_model(*models[1], run["root"], run["data"], run["device"], run["params"]))

# %% [markdown]
# ## Sensitivity: which groups can be INT8
# One group INT8 at a time (everything else FP32), on validation; `all` is every group at once.
# Red groups are the ones the default keeps FP32 in PyTorch INT8. Logit differences are against the
# FP32 model. ONNX Runtime INT8 (8-bit activations where PyTorch's x86 kernels use 7) repeats the greedy
# choice in the same order on its own val F1, so it may keep fewer groups FP32.

# %%
qs.plot_sensitivity(results, max_f1_drop_pts);
for r in results:
    display(Markdown(f"**{r['name']}**: full INT8 with the kept groups loses {r['val_drop_pts_with_keep']:.2f} val "
                     f"points in PyTorch; ONNX Runtime keeps {', '.join(r['onnx_keep_fp32_groups']) or 'nothing'} FP32 "
                     f"and loses {r['onnx_val_drop_pts_with_keep']:.2f}"))
    display(qs.sensitivity_table(r))

# %% [markdown]
# ## Accuracy, size and speed
# Test macro-F1, bytes on disk, batch-1 latency (32 real tokens, pinned threads) for every variant
# next to its FP32 PyTorch source. `agreement` is the share of test sentences where the variant
# predicts the same class as FP32; `max_abs_diff`/`mean_abs_diff` compare the logits.

# %%
qs.plot_tradeoffs(results);
for r in results:
    display(qs.variants_table(r))
    display(Markdown(f"ONNX export parity ({r['name']}, padded batch {r['onnx_parity']['batch_shape']}): max |logit "
                     f"diff| {r['onnx_parity']['max_abs_diff']:.2e}, agreement {r['onnx_parity']['agreement']:.0%}"))

# %% [markdown]
# ## Where the INT8 models err
# Test confusion matrices of the FP32 source and its INT8 variants.

# %%
for r in results:
    report.plot_confusions({f"{r['name']} FP32": r["fp32"]["test"],
                            **{v["name"]: r["evals"][v["name"]] for v in r["variants"] if "fp32" not in v["name"]}});

# %% [markdown]
# ## Verdict

# %%
display(Markdown(qs.verdict(results)))

# %%
report.write_stage_metrics(run, "03_quantization", run["info"],
                           {"variants": [v for r in results for v in r["variants"]], "goals": qs.GOALS,
                            "models": [qs.public(r) for r in results]},
                           qs.headline(results))
