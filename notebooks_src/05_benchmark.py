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
# # 05 · Benchmark: which model to ship
#
# Every variant produced by stages 01-04 (teacher, students, quantized, pruned) plus the stacked
# combinations built here (pruned -> ONNX -> INT8) is measured by **one harness**, each in a fresh
# process (forked from a server that has imported torch, transformers and ONNX Runtime once, so load
# time is the model's own, not the libraries') with its threads pinned: quality on the same held-out
# test set (macro-F1 with a bootstrap 95% interval, per-class F1, agreement with the teacher, expected
# calibration error) and cost (batch-1 latency on real test sentences at their natural length,
# throughput at batch 32, peak memory, load time, bytes on disk). The recommendation is the fastest
# variant within a set F1 budget of the teacher.

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/, logs/, reports/, results/ and artifacts/ live
gpu = False  # also measure GPU throughput at batch 32 (latency is always measured on the CPU)
seed = 42  # seeds the bootstrap and anything random
threads = 2  # CPU threads every variant is pinned to
max_drop_points = 1.5  # largest test macro-F1 loss vs the teacher a shippable model may have
min_speedup = 8.0  # batch-1 speed-up over the FP32 PyTorch teacher the shipped model should reach
min_size_ratio = 6.0  # times smaller on disk than the teacher the shipped model should be
stacked = True  # build pruned -> ONNX INT8 combinations
trim_vocab = True  # also build stacked twins whose vocabulary keeps only the tokens of the train and val sentences
vocab_frequent = 5000  # trimmed twins also keep the first N vocabulary ids (the most common words)
max_test = 0  # 0 uses the whole test set, smoke runs use the first few sentences
latency_n = 100  # real test sentences timed one at a time (each twice, after warm-up)

# %%
from IPython.display import Markdown, display

from lib import common, decide, report, ship

run = common.start_stage("05_benchmark", globals())

# %% [markdown]
# ## Variants
# Listed by each stage in its metrics JSON; the stacked ones are built now. A `_vocab` twin keeps only
# the WordPiece tokens the train and val sentences use (plus every single character, so no word becomes
# `[UNK]`) and the first `vocab_frequent` ids, which BERT's vocabulary orders by word frequency (a prior
# for words future text will bring): the embedding matrix is most of a small model's bytes, and
# head/FFN pruning never touches it.

# %%
variants = ship.all_variants(run, stacked, trim_vocab, vocab_frequent)
display(Markdown("\n".join(f"* `{v['name']}` ({v['format']}, from stage {v['stage']})" for v in variants)))

# %% [markdown]
# ## Benchmark

# %%
results = ship.run_benchmark(run, variants, threads, max_test, latency_n, gpu=run["device"] if gpu else None)
ship.write_results(results, run["root"] / "results", run["info"])
display(decide.summary_table(results))

# %% [markdown]
# ## Trade-offs
# Log-scale cost on x; the dashed line joins the variants no other variant beats on both axes.

# %%
goals = {"max_drop_points": max_drop_points, "min_speedup": min_speedup, "min_size_ratio": min_size_ratio}
recommended = decide.recommend(results, **goals)
decide.plot_tradeoffs(results, recommended["name"]);
decide.plot_retention(results);

# %% [markdown]
# ## Recommendation and export
# The fastest variant that meets all three goals (F1 budget, speed-up, size); if none does, the fastest
# within the F1 budget. It is copied to `artifacts/model` with a model card; `python -m lib.predict` serves it.

# %%
display(Markdown(decide.recommendation_text(recommended, results, goals)))
exported = decide.export_recommended(recommended, results, run, run["info"], goals)
print(f"exported to {exported}")

# %%
report.write_stage_metrics(run, "05_benchmark", run["info"],
                           {"variants_measured": len(results), "recommended": recommended.to_dict(),
                            "table": decide.index_table(results), "artifact": str(exported)},
                           {"recommended": recommended["name"], "recommended test macro-F1": recommended["macro_f1"],
                            "speedup vs teacher": recommended["speedup_vs_teacher"],
                            "size ratio vs teacher": recommended["size_ratio_vs_teacher"]})
