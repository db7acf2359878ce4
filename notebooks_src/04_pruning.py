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
#   best-validation-F1 weights. Removed units no longer exist, so later rounds only score survivors.
# * Levels are cumulative: the 50% model continues from the 30% one, so with the default one round
#   per level it is reached in two prune-then-recover steps (0 → 30% → 50%).

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/, logs/ and reports/ are written
gpu = False  # prune and recover on CUDA
seed = 42  # one seed for shuffling and initialisation
student_dir = ""  # empty reads the best student from stage 02, none skips it
head_levels = "0.3,0.5"  # comma-separated shares of attention heads removed, one per level, increasing
ffn_levels = "0.3,0.5"  # comma-separated shares of FFN neurons removed, as many as head_levels
rounds = 1  # prune-then-recover rounds to reach each level from the previous one
recovery_epochs = 1  # KD fine-tuning epochs after each pruning round
importance = "taylor"  # taylor (gradient of head and neuron gates) or entropy (heads by attention entropy)
importance_batches = 16  # training batches used to score units in each round
lr = 1e-4  # AdamW peak learning rate of the recovery fine-tuning
temperature = 2.0  # KD softmax temperature
kd_alpha = 0.7  # weight of the KD loss, the rest is cross-entropy on gold labels
batch_size = 32  # recovery batch size
max_length = 128  # tokens; batches are padded only to their longest sentence
latency_seq_len = 32  # batch-1 latency inputs are real test sentences padded or cut to this length
latency_threads = 2  # torch CPU threads for latency
latency_sentences = 64  # real test sentences timed one at a time
latency_passes = 2  # timing passes over all models, the fastest median of each is kept

# %%
from IPython.display import Markdown, display

from lib import common, data, prune_stage, report

run = common.start_stage("04_pruning", globals())
levels = prune_stage.parse_levels(head_levels, ffn_levels)
models = prune_stage.sources(run, student_dir)
hp = {"rounds": rounds, "recovery_epochs": recovery_epochs, "method": importance, "importance_batches": importance_batches,
      "lr": lr, "temperature": temperature, "kd_alpha": kd_alpha, "batch_size": batch_size, "max_length": max_length,
      "seed": seed}
display(Markdown(f"Pruning **{', '.join(models)}** to levels {[prune_stage.level_name(l) for l in levels]} "
                 "(% of heads, % of FFN neurons removed)."))

# %% [markdown]
# ## Prune and recover
# Each level's checkpoint is written to `checkpoints/pruned/<model>_<level>` as soon as it is reached.

# %%
results = {name: prune_stage.prune_model(name, path, run, levels, hp) for name, path in models.items()}

# %% [markdown]
# ## Size and batch-1 CPU latency
# Every checkpoint is reloaded from disk (pruned ones through `lib.prune.load_pruned`) and timed on
# real test sentences, one at a time, with the same harness as stage 05.

# %%
prune_stage.measure(results, data.load_splits(run["data"])["test"]["text"].tolist(), latency_seq_len, latency_threads,
                    latency_passes, latency_sentences)
display(prune_stage.table(results))

# %% [markdown]
# ## Where the units were removed
# Share of heads and FFN neurons each layer keeps (numbers: units kept).

# %%
prune_stage.plot_kept(results);

# %% [markdown]
# ## Accuracy and speed against sparsity
# Where the F1 curve bends down is the cliff: the sparsity past which recovery no longer keeps up.

# %%
prune_stage.plot_curve(results);

# %% [markdown]
# ## Where the pruned models err (test set)

# %%
report.plot_confusions(prune_stage.confusions(results));

# %%
report.write_stage_metrics(run, "04_pruning", run["info"],
                           {"variants": prune_stage.variants(results, run["root"]),
                            "models": prune_stage.metrics(results, run["root"]), "hyperparameters": hp},
                           prune_stage.headline(results))
