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
# # 04 · Structured pruning
#
# Masking attention heads leaves every weight in place: parameters, file size and latency do not
# move. Here pruned units are **physically removed**: a head's rows of Q/K/V and its columns of the
# attention output projection, an FFN neuron's row of the intermediate dense and its column of the
# output dense. The model really shrinks, and a `pruning_spec.json` saved with the weights lets it
# reload with the same shapes.
#
# * **Importance** (Michel et al. 2019): a gate of value 1 multiplies every head's output and every
#   FFN neuron; |d loss / d gate| per example, summed over training batches, estimates what removing
#   the unit would cost. Scores are L2-normalised per layer and ranked globally, so layers lose
#   different numbers of units; every layer keeps at least one head and one neuron. The alternative
#   `importance = "entropy"` drops the heads with the most diffuse attention first.
# * **Iterative prune-then-recover**: each level is reached in `rounds` steps; after each step the
#   model is fine-tuned with knowledge distillation from its own unpruned version, keeping the
#   best-validation-F1 weights. With `transfer`, recovery also reads stage 02's unlabeled transfer
#   sentences (soft labels only): twice the text for the KD term, which a 2,359-sentence train set
#   alone over-fits within an epoch or two. Removed units no longer exist, so later rounds only score survivors.
# * Levels are cumulative: the 50% model continues from the 30% one, so with the default one round
#   per level it is reached in two prune-then-recover steps (0 → 30% → 50%).
# * Each model's **chosen level** is the most pruned one that meets the goals (`max_f1_drop_pts`,
#   `min_speedup` against its unpruned source) **on validation**; test deltas (negative = worse) are
#   reported with a paired bootstrap 95% interval; the verdict's word (better / worse / indistinguishable
#   from the unpruned source) reads the bootstrap p Holm-adjusted over every level, at alpha 0.05. Stage 05
#   still benchmarks every level.

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/, logs/ and reports/ are written
gpu = False  # prune and recover on CUDA
seed = 42  # seed for the importance batches, recovery shuffles and dropout, reset before each model [in 0..4294967295]
seeds = 3  # training seeds per model (seed, seed+1, ...): each level is pruned and recovered once per seed, judged on their mean val, the median seed on val exported [in 1..32] [smoke 2]
student_dir = ""  # empty reads the best student from stage 02, none skips it, else a model folder
head_levels = "0.3,0.5"  # comma-separated shares of attention heads removed, one per level, increasing [levels] [smoke 0.5]
ffn_levels = "0.3,0.5"  # comma-separated shares of FFN neurons removed, as many as head_levels [levels] [smoke 0.5]
rounds = 1  # prune-then-recover rounds to reach each level from the previous one [min 1]
recovery_epochs = 1  # KD fine-tuning epochs after each pruning round [min 0]
transfer = True  # recovery KD also learns from the unlabeled PhraseBank transfer sentences (the unpruned model's soft labels only)
importance = "taylor"  # how units are scored, by the gradient of head and neuron gates or heads by attention entropy [one of taylor, entropy]
importance_batches = 16  # training batches used to score units in each round [min 1] [smoke 2] [gpu 8]
lr = 1e-4  # AdamW peak learning rate of the recovery fine-tuning [above 0] [bert-base 3e-5]
temperature = 2.0  # KD softmax temperature [above 0]
alpha = 0.7  # weight of the KD loss, the rest is cross-entropy on gold labels [in 0..1]
batch_size = 32  # recovery batch size [min 1] [smoke 16] [gpu 64]
max_length = 128  # tokens, batches are padded only to their longest sentence [in 8..512] [smoke 48]
latency_seq_len = 32  # batch-1 latency inputs are real test sentences padded or cut to this length [in 8..512]
latency_n = 64  # real test sentences timed one at a time [min 1] [smoke 8]
threads = 2  # torch CPU threads for latency [in 1..256]
latency_passes = 2  # timing passes over all models, the fastest median of each is kept [min 1] [smoke 1]
max_f1_drop_pts = 1.0  # goal: validation macro-F1 points the chosen level may lose vs its unpruned source [min 0]
min_speedup = 1.2  # goal: batch-1 speed-up of the chosen level over its unpruned source [min 0]

# %%
from IPython.display import Markdown, display

from lib.report import levels, plots, render
from lib.stages import pruning

stage = pruning.Stage(globals())
stage.pick_models()
display(Markdown(stage.describe()))

# %% [markdown]
# ## Prune and recover
# With `seeds` above 1 each model is pruned and recovered once per seed (the importance batches, the recovery
# shuffles and dropout change with it; each level continues its own seed's previous level). Per level the seed
# with the median val macro-F1 is exported to `checkpoints/pruned/<model>_<level>`, the others beside it as
# `<model>_<level>_seed<s>`; the curves below are the exported seeds'.

# %%
stage.prune();

# %% [markdown]
# ## Recovery fine-tuning curves
# After each pruning round, `recovery_epochs` of KD fine-tuning from the unpruned model: training loss (the KD
# objective) and learning rate per optimizer step, validation macro-F1 after each epoch. One figure per model,
# one line per level and round.

# %%
for role, res in stage.results.items():
    plots.plot_training(res["recovery"], f"{role}: recovery after pruning");

# %% [markdown]
# ## Size, speed and accuracy against the unpruned source
# Every checkpoint is reloaded from disk (pruned ones through `lib.techniques.prune.load_pruned`) and timed on
# real test sentences, one at a time, with SDPA attention as stage 05 runs them (this stage's own timing: the
# caption says how). `Δ` is the level's macro-F1
# minus its unpruned source's, in points (negative = worse): on val it is what the goals judge, on test
# it comes with a paired bootstrap 95% interval. `goals (val)`: every goal of this stage met on validation.

# %%
display(plots.table(stage.measure(), caption=f"Each pruning level against its unpruned source: Δ = level minus "
                  f"source in macro-F1 points (val: the mean over seeds; test: the exported seed's); latency, "
                  f"{render.in_stage_timing(stage.params)}."))

# %% [markdown]
# ## Training seeds
# Each level's macro-F1 over its seeds, mean ± sd (min-max), and the seed exported; the paired test intervals
# above cover only which sentences were sampled, for the exported seed's model. The plot: bars at the mean over
# seeds, a dot per seed, each model's unpruned source (one training) first.

# %%
display(plots.table(stage.seed_table(), caption="Pruning levels over their training seeds: mean ± sd (min-max) of "
                  "macro-F1; the goals read the mean val, the exported seed is the median on val."))
stage.plot_seeds();

# %% [markdown]
# ## Where the units were removed
# Share of heads and FFN neurons each layer keeps (numbers: units kept).

# %%
levels.plot_kept(stage.results);

# %% [markdown]
# ## Accuracy and speed against sparsity
# Where the F1 curve bends down is the cliff: the sparsity past which recovery no longer keeps up.

# %%
levels.plot_curve(stage.results, max_f1_drop_pts, min_speedup);

# %% [markdown]
# ## Where the pruned models err (test set)

# %%
plots.plot_confusions(levels.confusions(stage.results));

# %% [markdown]
# ## Verdict

# %%
display(Markdown(stage.finish().verdict))
