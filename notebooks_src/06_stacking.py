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
# # 06 · Stacking: pruned, trimmed, exported, INT8
#
# Each technique stage compresses one way; what ships stacks them. Here every pruned variant of stage 04 is
# exported to ONNX (kept only if its logits match PyTorch's) and quantized to INT8 in ONNX Runtime twice:
# **dynamic** (activation scales per batch) and **static** (`_onnx_static_int8`: scales fixed once on
# `calibration_n` training sentences, by the calibration method stage 03 chose on validation for the model it
# was pruned from). Both keep FP32 the layer groups stage 03 kept FP32 for that model. Stage 03 hands both
# choices over on its variants, not through its report. A `_vocab` twin first keeps only the WordPiece
# tokens the train sentences and the unlabeled tweet pool use (never val, so validation sees what trimming
# loses) at least `vocab_min_count` times (plus every single character, so no word becomes `[UNK]`) and the
# first `vocab_frequent` ids, which BERT's vocabulary orders by word frequency (a prior for words future text
# will bring): the embedding matrix is most of a small model's bytes, and head/FFN pruning never touches it.
# The twin's position table keeps only the 128 positions the study reads (serving refuses longer input).
# Each stacked model is also built for **OpenVINO** from the same FP32 ONNX graph (kept only if its logits
# match ONNX Runtime's): `_openvino` (FP32 IR), `_openvino_bf16` (the same files run in bf16, only on a CPU with
# avx512_bf16 or amx_bf16) and `_openvino_int8` (NNCF post-training INT8, calibrated on `calibration_n` training
# sentences). The runtime is one more dimension of a variant: stage 05 scores each like any other.
# With `seed_twins`, every recipe is also built from the pruned models of stage 04's other training seeds: not
# variants of their own, they are listed on the exported one's record (`seed_runs`), and stage 05 scores them on
# validation so that the ship rule reads the seed mean. This stage runs before the benchmark (its kind is
# `technique`) and chooses nothing: stage 05 measures its variants with every other one.

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/, logs/ and reports/ are written
seed = 42  # seeds the calibration sample of the static INT8 models [in 0..4294967295]
stacked = True  # build pruned -> ONNX INT8 combinations; False builds none
trim_vocab = True  # also build stacked twins whose vocabulary keeps only the tokens of the train sentences and the unlabeled tweet pool
vocab_frequent = 5000  # trimmed twins also keep the first N vocabulary ids (the most common words) [min 0]
vocab_min_count = 3  # trimmed twins keep a train/pool token only if those texts use it at least this often (a rarer word falls back to kept pieces) [min 1]
calibration_n = 256  # training sentences each stacked static INT8 twin calibrates on (ONNX Runtime: by the method stage 03 chose on val for its source; OpenVINO: NNCF), 0 builds none [min 0] [smoke 16]
seed_twins = True  # also build every stacked recipe from the pruned models of stage 04's other training seeds, so that stage 05 reads the ship rule's F1 goals on the seed mean
workers = 2  # processes building at once, each a pruned model's recipes (much of a build is single-threaded Python; 1 builds here, one after another) [in 1..64]
runtimes = "onnxruntime,openvino"  # runtimes every stacked model is built for: ONNX Runtime (dynamic and static INT8 of the fused graph), OpenVINO (FP32 IR, a bf16 twin where the CPU runs bf16, NNCF INT8) [each of onnxruntime, openvino]

# %%
from IPython.display import Markdown, display

from lib.stages import stacking

stage = stacking.Stage(globals())

# %% [markdown]
# ## What is stacked, and with which choices of stage 03

# %%
stage.gather()
display(Markdown("\n".join(f"* `{v.name}` (pruned from `{v.source}`)" for v in stage.pruned) or "No pruned variant."))

# %% [markdown]
# ## The stacked variants

# %%
stage.build()
display(Markdown(stage.describe() or "None built."))

# %% [markdown]
# ## Verdict

# %%
display(Markdown(stage.finish().verdict))
