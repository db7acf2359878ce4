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
# # 02 · Knowledge distillation
#
# A **student** half as deep as the teacher from stage 01 (3 of MiniLM's 6 layers, 6 of FinBERT's 12,
# as DistilBERT), trained to imitate it. A third of the depth was 2-4 test points short on this data.
# The original study's student was a randomly initialised 4-layer transformer and lost about
# 13 macro-F1 points; ours starts from the teacher itself (DistilBERT-style): the same BERT class,
# the teacher's embeddings, pooler and classifier, and an evenly spaced subset of its layers
# (each the top layer of the block it replaces, so the classifier still sees the last layer's output).
# The student loads with standard `transformers` classes.
#
# Three students, identical except for what they learn from:
#
# * **baseline**: fine-tuned on the gold labels alone, to show what the teacher adds;
# * **kd_vanilla**: `alpha * KL(teacher/T || student/T) * T^2 + (1 - alpha) * CE`, with the teacher's
#   logits computed once for the training set;
# * **kd_intermediate**: the vanilla terms plus MSE between mapped hidden states and attention maps
#   (padding positions masked out), with the teacher run on every batch.
#
# Both KD students also see a **transfer set**: the PhraseBank sentences below the 100%-agreement
# level (none of them in our splits), with the teacher's soft labels and no gold label. A small
# student is short of data more than of labels; the teacher can label as much in-domain text as we
# have (Hinton et al. 2015). The baseline, having no teacher, trains on the labeled sentences alone.
# With `transfer_tweets`, the unlabeled tweet pool stage 01 set aside (outside both OOD evaluation parts)
# joins the transfer set, again with the teacher's soft labels only: never a gold label.
#
# The best student is picked on **validation** macro-F1; test is only used for the final comparison. With
# `seeds` above 1 every student is trained once per seed, the pick reads the mean over seeds, and the seed with
# the median val macro-F1 is the one exported, compared sentence by sentence below and read by later stages.

# %% tags=["parameters"]
out_dir = "."  # where data/ and checkpoints/teacher from stage 01 are, and students are written
gpu = False  # train on CUDA with bf16 autocast
seed = 42  # seed for shuffling and dropout, reset before each student [in 0..4294967295]
seeds = 3  # training seeds per student (seed, seed+1, ...): the best is chosen on their mean val macro-F1, the median seed on val is exported [in 1..32] [smoke 2]
student_layers = 0  # student depth, 0 picks half the teacher layers (3 for MiniLM, 6 for FinBERT) [min 0]
epochs = 4  # upper bound per student, early stopping may end sooner [min 1] [smoke 1]
lr = 1e-4  # AdamW peak learning rate [above 0] [bert-base 5e-5]
batch_size = 32  # training batch size (evaluation uses twice this) [min 1] [smoke 16] [gpu 64]
max_length = 128  # tokens, batches are padded only to their longest sentence [in 8..512] [smoke 48]
alpha = 0.5  # weight of the KD term, 1 minus alpha goes to cross-entropy on the gold labels [in 0..1]
temperature = 2.0  # softmax temperature of the KD term [above 0]
hidden_weight = 1.0  # weight of the hidden-state MSE in intermediate KD [min 0]
attention_weight = 10.0  # weight of the attention-map MSE in intermediate KD [min 0]
transfer = True  # KD students also learn from the unlabeled PhraseBank sentences outside the splits (teacher soft labels only)
transfer_tweets = False  # KD students also learn from the unlabeled tweet pool stage 01 set aside (data/tweet_pool.csv, teacher soft labels only, never gold)
patience = 3  # epochs without a val-F1 gain before stopping [min 1]
latency_seq_len = 32  # batch-1 latency inputs are real test sentences padded or cut to this length [in 8..512]
latency_n = 64  # real test sentences timed one at a time [min 1]
threads = 2  # CPU threads for the latency timing [in 1..256]
max_f1_drop_pts = 1.5  # goal: validation macro-F1 points the best student may lose against the teacher [min 0]
min_speedup = 2.5  # goal: batch-1 CPU speed-up of the best student over the teacher [min 0]

# %%
from IPython.display import Markdown, display

from lib.report import plots, render
from lib.stages import distillation

stage = distillation.Stage(globals())

# %% [markdown]
# ## Teacher, data and the student's shape
# The teacher is scored again on this exact split, and its logits on the training set are computed once.

# %%
stage.setup()
display(Markdown(stage.describe()))

# %% [markdown]
# ## Baseline: the student without a teacher

# %%
stage.train_baseline();

# %% [markdown]
# ## Vanilla KD: soft targets from precomputed teacher logits

# %%
stage.train_kd_vanilla();

# %% [markdown]
# ## Intermediate KD: also match hidden states and attention maps

# %%
stage.train_kd_intermediate();

# %% [markdown]
# ## Learning curves
# Training loss per optimizer step is each run's own objective (cross-entropy for the baseline, the KD mix for
# the others, so the three are not on one scale); learning rate per step; validation macro-F1 after each epoch.
# The KD students train on the transfer sentences too, so their epochs have more steps (and their two learning-rate
# lines coincide).

# %%
plots.plot_training(stage.results, "Students", stage.target_f1);

# %% [markdown]
# ## Accuracy: students vs teacher
# `Δ` is the student's macro-F1 minus the teacher's, in points: negative means worse. On test it comes
# with a paired bootstrap 95% interval (both models scored on the same resampled sentences) and the bootstrap
# p of "no difference". The word (`on test`) follows one rule: *better* / *worse* only where that p,
# **Holm-adjusted over the students compared with the teacher** (the family; its size is in the header), is
# below 0.05, else *indistinguishable from the teacher*. McNemar p (accuracy, unadjusted) is secondary.
# Negative recall: negative is the smallest class and the first place compression hurts. Agreement: the
# share of test sentences where student and teacher predict the same class. The goals read validation.

# %%
table = stage.compare()
display(plots.table(stage.readable(), highlight=stage.best(),
                  caption="Students against the teacher: validation decides, OOD-val and test are reported; Δ = student "
                  "minus teacher in macro-F1 points, on test with its paired bootstrap 95% interval."))

# %% [markdown]
# ## Training seeds
# The paired intervals above cover which sentences were sampled, for one seed's models. This table covers
# training: each student's macro-F1 as mean ± sd (min-max) over its seeds, and the seed exported. The bars below
# are the means, each dot one seed; the teacher is one seed.

# %%
display(plots.table(stage.seed_table(), highlight=stage.best(),
                  caption="Students over their training seeds: mean ± sd (min-max) of macro-F1; the best student is "
                  "chosen on the mean val macro-F1, the exported seed is the median on val."))
stage.plot_f1();

# %%
plots.plot_confusions(stage.tests());
plots.plot_per_class_f1(stage.tests());

# %% [markdown]
# ## Size and batch-1 CPU latency
# One real test sentence at a time, padded to `latency_seq_len` tokens, pinned threads, after warm-up;
# models are timed in interleaved rounds so background load hits all of them alike.

# %%
stage.measure()
display(plots.table(stage.size_table(), highlight=stage.best(),
                  caption=f"Size and latency, {render.in_stage_timing(stage.params)}."))

# %% [markdown]
# ## Verdict

# %%
display(Markdown(stage.finish().verdict))
