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
# Every variant the earlier stages produced (teacher, students, quantized, pruned, and stage 06's stacked
# pruned -> ONNX -> INT8 models) is measured by **one harness**, each in a fresh
# process (forked from a server that has imported torch, transformers and ONNX Runtime once, so load
# time is the model's own, not the libraries') with its threads pinned. Quality is scored on two named
# sets of sentences, each in the same seeded shuffle for every variant (batch-mates at random, as a server sees
# them) and batches of 32: **validation**, which decides, and **test**, which is only reported. Per set: macro-F1 with a bootstrap 95% interval, per-class F1, and the
# **paired** difference to the teacher (the same resampled sentences for both models) with its 95% interval
# and the two-sided bootstrap p-value of "no difference" from the same resamples; a negative difference means
# worse than the teacher. **One rule gives the word**: *better* or *worse* only where that p, **Holm-adjusted
# over every variant compared with the teacher** on the set (the family; its size is in the table's header and
# the verdict), is below 0.05, else *indistinguishable from the teacher*. An exact McNemar p (accuracy,
# unadjusted) stays as a secondary column and decides nothing. Cost: batch-1 latency on real
# validation sentences at their natural length, throughput at batch 32, peak memory, load time, MB on disk;
# then the same **end to end** (text in, label out: `lib.predict`'s loader, tokenizer and length-sorted batches).
# A **FinBERT-sized yardstick** (a BertForSequenceClassification of bert-base shape, 12 x 768, random weights
# built here) is timed by the same harness as FP32 PyTorch and ONNX Runtime INT8: *shape only, untrained*, its
# F1 n/a, never recommended, never the reference of a delta (the teacher is). Last, ONNX Runtime's own INT8 and
# FP32 matmul peak on this CPU, and the share of it each ONNX variant's useful multiply-accumulates reach.
# **Reference rows** (`references`): the fine-tuned teacher through the off-the-shelf tools a user would reach for
# instead of this study (ONNX Runtime's transformers optimizer at Optimum's O3 + dynamic INT8 with Optimum's
# avx512_vnni config; OpenVINO with its default hints; OpenVINO + NNCF INT8, where `openvino` and `nncf` are
# installed), built here and measured by the same harness with the same paired statistics (their Holm family is their
# own, so they move no candidate's word): *reference, not a candidate*, never recommended, never the reference of a
# delta. The goals against them are end to end, in this run: `min_speedup_vs_reference` compares batch-1 latency with
# the **fastest reference row at batch 1**, `min_throughput_vs_reference` batch-32 throughput with the **reference row
# of highest batch-32 throughput** (each the hardest bar at its batch size; without reference rows both read n/a and
# do not block).
# The recommendation is the fastest variant that meets the deployment goals (`max_f1_drop_pts`,
# `min_speedup`, `min_size_ratio`, `min_speedup_vs_reference`, `min_throughput_vs_reference`, `min_ood_retention`
# when the tweets are present) **on validation**, among the
# variants whose labels do not depend on their batch-mates: the sets in `batch_flip_sets` are run again one
# sentence at a time, and a sentence whose label differs from its label in the shuffled batch of 32 is a **batch
# flip** (dynamic INT8 takes one activation scale over the whole batch, padding included). Only variants with zero
# flips on val and OOD-val can ship (test flips are reported); if every variant within the F1 budget flips, the
# one with the fewest ships and the verdict says so. Flips are counted where that rule can read them: the teacher,
# the reference rows and every variant within the F1 budget (plus half a point) of the teacher on val; a variant
# further below cannot ship, so its flips read "-" (not counted). Last, the shipped model is scored as `python -m lib.predict`
# serves it (its defaults), and the verdict says whether those F1s equal the table's.

# %% tags=["parameters"]
out_dir = "."  # where data/, checkpoints/, logs/, reports/, results/ and artifacts/ live
gpu = False  # also measure GPU throughput at batch 32 (latency is always measured on the CPU)
seed = 42  # seeds the bootstrap resamples and the shuffle each set is batched in [in 0..4294967295]
threads = 2  # CPU threads every variant is pinned to [in 1..256]
max_f1_drop_pts = 1.0  # deployment goal: largest validation macro-F1 loss vs the teacher a shippable model may have [min 0]
min_speedup = 12.0  # deployment goal: batch-1 speed-up over the FP32 PyTorch teacher [min 0]
min_size_ratio = 10.0  # deployment goal: times smaller on disk than the teacher [min 0]
min_speedup_vs_reference = 2.0  # deployment goal: end-to-end batch-1 speed-up over the fastest reference row of this run (n/a without reference rows) [min 0]
min_throughput_vs_reference = 1.5  # deployment goal: end-to-end batch-32 throughput over the reference row of highest batch-32 throughput (n/a without reference rows) [min 0]
min_ood_retention = 0.97  # deployment goal: the shipped model keeps at least this share of the teacher's out-of-domain validation macro-F1 [in 0..1]
max_eval = 0  # 0 scores every sentence of each set, smoke runs score the first few of each [min 0] [smoke 24]
latency_n = 100  # real validation sentences timed one at a time (each twice, after warm-up) [min 1] [smoke 8]
yardstick_layers = 12  # layers of the FinBERT-sized yardstick rows (bert-base shape, random weights, timed only), 0 for none [min 0] [smoke 1]
references = "ort_optimized_int8,openvino,openvino_nncf_int8"  # off-the-shelf reference rows built from the teacher and measured beside the variants (reference, not candidates; a recipe whose runtime is not installed is skipped with the reason) [each of ort_optimized_int8, openvino, openvino_nncf_int8] [smoke ort_optimized_int8]
batch_flip_sets = "val,test,ood_val"  # sets also run one sentence at a time to count the labels that differ from the shuffled batch of 32 (batch flips, counted for the teacher, the reference rows and the variants within the F1 budget; only variants with none on val and ood_val ship) [each of val, test, ood_val, ood_test]
peak_seconds = 1.0  # seconds per matmul shape when measuring the INT8 and FP32 peak of ONNX Runtime (5 shapes each), 0 skips it [min 0] [smoke 0.05]
serving_n = 50  # validation sentences each serving setting of the shipped ONNX model reads per round, one at a time (and more at batch 32), 0 ships ONNX Runtime's defaults unsearched [min 0] [smoke 4]
serving_rounds = 3  # interleaved rounds per step of the serving-settings search, each setting keeping its best [min 1] [smoke 1]
profile_n = 50  # validation sentences the shipped model is profiled on per operator, one at a time (and 8 times as many at batch 32), 0 skips the profile [min 0] [smoke 4]

# %%
from IPython.display import Markdown, display

from lib.measure import profile, serving_search
from lib.report import plots
from lib.ship import decide, pareto, seed_mean
from lib.stages import benchmark

stage = benchmark.Stage(globals())

# %%
stage.gather();

# %% [markdown]
# ## Benchmark and the choice
# Quality per set; `Δ vs teacher` is the paired difference in macro-F1 points with its 95% interval
# (negative = worse). On test: its bootstrap p, that p Holm-adjusted over the variants compared with the teacher
# (the header says how many), McNemar p (accuracy, unadjusted; secondary), and the word, read from the adjusted
# p at alpha 0.05: *better* / *worse* below it, else *indistinguishable*; the teacher's row is the *reference*.
# An interval that excludes 0 can still read *indistinguishable* once the family is accounted for.
# Last, the batch flips of each set in `batch_flip_sets`: labels that differ between the sentence alone and its
# shuffled batch of 32 ("-" where not counted: the variant is outside the F1 budget and cannot ship).
# Then, when stage 01 wrote them, the out-of-domain sets (financial tweets)
# beside the in-domain retention (per-class F1 in the stage's JSON). Then the costs. The highlighted row is the recommendation, chosen on
# validation. `#` numbers the points of the plots below.
#
# Seeds: every figure in the tables is one model's, the one each stage exported (the median training seed on val).
# Where a variant could ship (within the F1 budget plus 0.5 points) and was made from a model trained with several
# seeds, the same recipe's models from the other seeds are scored on validation too, and the F1 goals read the
# mean over seeds (the seeds table under the quality tables).

# %%
stage.benchmark()
stage.score_seeds()
results, recommended = stage.df, stage.recommend()
quality, costs, out_of_domain = stage.tables()
display(plots.table(quality, highlight=recommended.name, index=False, caption="Quality of every variant against the "
                  "teacher (row 0): validation decides, test is reported; Δ = variant minus teacher in macro-F1 points; "
                  "batch flips = labels that differ between the sentence alone and its shuffled batch of 32 (- outside the F1 "
                  "budget, not counted); rows marked "
                  "'reference, not a candidate' are the teacher through off-the-shelf tools (Holm over their own family)."))
if out_of_domain is not None:  # in-domain retention beside the out-of-domain figures, per class
    display(plots.table(out_of_domain, highlight=recommended.name, index=False, caption="Out of domain (financial "
                        "tweets) beside in domain: the share of the teacher's macro-F1 each variant keeps, and the paired Δ."))
if stage.seed_runs:  # the variants the ship rule read on the mean of their training seeds
    display(plots.table(seed_mean.table(results, stage.seed_runs), highlight=recommended.name, index=False,
                        caption="Variants read on their training seeds: each seed's model scored on validation (the "
                        "exported one first, its figures those of the tables above); the F1 goals read the means."))
display(plots.table(costs, highlight=recommended.name, index=False, caption=f"Costs, all from this stage's one "
                  f"harness (each variant in a fresh process, {threads} threads): latency over {latency_n} validation "
                  "sentences at natural length, batch 1; throughput at batch 32; end to end = text in, label out."))

# %% [markdown]
# ## Against the off-the-shelf tools
# The shipped model beside every reference row (the same teacher through other tools), all from this stage's one
# harness: macro-F1 with the paired Δ to the teacher, batch-1 latency of the model alone and end to end, end-to-end
# throughput at batch 32, MB on disk.

# %%
against = stage.reference_table()
display(Markdown("No reference rows: `references` is empty or none could be built here (the verdict says why).")
        if against is None else plots.table(against, index=False, caption="The shipped model beside the reference "
                                            "rows (reference, not candidates), measured in this run."))

# %% [markdown]
# ## How fast, really
# End to end, against the FinBERT-sized yardstick, and the share of the CPU's measured matmul peak the
# recommended model's useful multiply-accumulates (from its graph's shapes, at the validation sentences' real
# token counts) reach at batch 32: the speed left on the table.

# %%
display(Markdown(stage.hardware()))

# %% [markdown]
# ## Trade-offs
# Validation macro-F1 (what decides) against log-scale cost; the dashed line joins the variants no other
# variant beats on both axes. Dotted red: the F1 budget below the teacher; dashed vertical: the speed and
# size goals (a variant must be above the red line and left of the vertical one).

# %%
stage.plot_tradeoffs();

# %%
display(Markdown(decide.why_here(recommended, results, stage.stage_goals())))

# %%
pareto.plot_retention(results);

# %% [markdown]
# ## Variants measured
# Listed by each earlier stage in its result (stage 06 built the stacked ones); the yardstick and the reference rows
# are built here (a reference recipe that cannot run on this machine is listed with the reason).

# %%
display(Markdown(stage.describe()))

# %% [markdown]
# ## Serving settings for this machine
# Which ONNX Runtime settings serve the recommended model fastest depends on the CPU, so none is fixed in code:
# they are searched here, one at a time from ONNX Runtime's defaults (intra-op threads up to `threads`, then
# spinning of idle threads, graph optimization level, memory pattern), each timed end to end as
# `python -m lib.predict` serves (text in, label out) on real validation sentences, in interleaved rounds.
# The choice ships with the model in `serving.json`; `predict` reads it (`--threads` still wins).

# %%
stage.tune_serving()
display(Markdown(stage.serving_text()))
if stage.serving is not None:
    display(plots.table(serving_search.table(stage.serving), index=False, caption="Serving settings tried, step by "
                        "step (each step starts from the one before's choice; the last step's ships), timed in this "
                        "stage's process on validation sentences: comparable with each other, not with the harness."))

# %% [markdown]
# ## Where the time goes
# The recommended model's node time per operator group (GEMM, attention, quantize/dequantize, layer norm, other),
# traced by its runtime's profiler with the serving settings it ships with, at batch 1 (`profile_n` validation
# sentences) and batch 32 (length-sorted batches, as `lib.predict` serves), warm-up runs left out; the GEMM group's
# GOP/s (its multiply-accumulates as executed, over its time) against ONNX Runtime's INT8 peak measured above.

# %%
stage.profile_shipped()
display(Markdown(profile.summary(stage.profiled, profile.why_none(profile_n, recommended["name"]))))
if stage.profiled is not None:
    display(plots.table(profile.table(stage.profiled), index=False, caption="Share of node time and ms per sentence "
                        "per operator group (profiled: slightly slower than unprofiled), and the GEMM group's share "
                        "of the INT8 peak."))

# %% [markdown]
# ## Recommendation and export
# The fastest variant with zero batch flips on val and OOD-val that meets every deployment goal on validation; if
# none does, the fastest of those within the F1 budget. It is copied to `artifacts/model` with a model card; `python -m lib.predict` serves it.

# %%
exported = stage.export()
print(f"exported to {exported}")

# %% [markdown]
# ## Verdict

# %%
display(Markdown(stage.finish().verdict))
