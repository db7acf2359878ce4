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
#
# The best student is picked on **validation** macro-F1; test is only used for the final comparison.

# %% tags=["parameters"]
out_dir = "."  # where data/ and checkpoints/teacher from stage 01 are, and students are written
gpu = False  # train on CUDA with bf16 autocast
seed = 42  # seed for shuffling and dropout, reset before each student
student_layers = 0  # student depth, 0 picks half the teacher layers (3 for MiniLM, 6 for FinBERT)
epochs = 4  # upper bound per student, early stopping may end sooner
lr = 1e-4  # AdamW peak learning rate
batch_size = 32  # training batch size (evaluation uses twice this)
max_length = 128  # tokens, batches are padded only to their longest sentence
alpha = 0.5  # weight of the KD term, 1 minus alpha goes to cross-entropy on the gold labels
temperature = 2.0  # softmax temperature of the KD term, must be positive
hidden_weight = 1.0  # weight of the hidden-state MSE in intermediate KD
attention_weight = 10.0  # weight of the attention-map MSE in intermediate KD
transfer = True  # KD students also learn from the unlabeled PhraseBank sentences outside the splits (teacher soft labels only)
patience = 3  # epochs without a val-F1 gain before stopping
target_f1 = 0.87  # validation macro-F1 the project targets, drawn on the plots

# %%
from IPython.display import Markdown, display

from lib import common, distill, report

run = common.start_stage("02_distillation", globals())

# %% [markdown]
# ## Teacher, data and the student's shape
# The teacher is scored again on this exact split, and its logits on the training set are computed once.

# %%
ctx = distill.setup(run, student_layers=student_layers, epochs=epochs, lr=lr, batch_size=batch_size,
                    max_length=max_length, alpha=alpha, temperature=temperature, hidden_weight=hidden_weight,
                    attention_weight=attention_weight, patience=patience, seed=seed, amp=gpu, transfer=transfer)
display(Markdown(f"Teacher: {ctx['teacher_layers']} layers, val macro-F1 {ctx['teacher_val']['macro_f1']:.4f}, "
                 f"test {ctx['teacher_test']['macro_f1']:.4f}. Student: {ctx['student_layers']} layers, "
                 f"copied from teacher layers {ctx['layer_map']} (0-based). KD training set: "
                 f"{len(ctx['splits']['train'])} labeled + {len(ctx['kd_train']) - len(ctx['splits']['train'])} "
                 "unlabeled transfer sentences."))

# %% [markdown]
# ## Baseline: the student without a teacher

# %%
results = {"baseline": distill.train_student(ctx, "baseline")}

# %% [markdown]
# ## Vanilla KD: soft targets from precomputed teacher logits

# %%
results["kd_vanilla"] = distill.train_student(ctx, "kd_vanilla")

# %% [markdown]
# ## Intermediate KD: also match hidden states and attention maps

# %%
results["kd_intermediate"] = distill.train_student(ctx, "kd_intermediate")

# %% [markdown]
# ## Learning curves
# Train loss is each run's own objective (so the three are not on one scale); validation loss is
# plain cross-entropy for all.

# %%
report.plot_history({k: r["history"] for k, r in results.items()}, target_f1);

# %% [markdown]
# ## Accuracy: students vs teacher
# Per-class F1 on test, negative recall (negative is the smallest class and the first place
# compression hurts) and agreement: the share of sentences where student and teacher predict the same class.

# %%
table = distill.comparison_table(ctx, results)
distill.plot_f1(table, target_f1);
display(table)

# %%
tests = {"teacher test": ctx["teacher_test"], **{f"{k} test": r["test"] for k, r in results.items()}}
report.plot_confusions(tests);
report.plot_per_class_f1(tests);

# %% [markdown]
# ## Size and batch-1 CPU latency
# One real test sentence at a time, padded to 32 tokens, 2 threads, after warm-up; models are timed
# in interleaved rounds so background load hits all of them alike.

# %%
sizes = distill.measure(ctx, results, seq_len=32, threads=2)
display(sizes.round(3))

# %% [markdown]
# ## Interpretation

# %%
display(Markdown(distill.verdict(table, sizes, results)))

# %%
metrics, headline = distill.stage_metrics(ctx, results, table, sizes, target_f1)
report.write_stage_metrics(run, "02_distillation", run["info"], metrics, headline)
