"""lib/core/pipeline.py: stage order comes from each stage's kind, so the benchmark stays last whatever is added."""
from lib.core import pipeline


def test_run_order_is_source_techniques_benchmark():
    assert pipeline.NAMES == ["01_data_teacher", "02_distillation", "03_quantization", "04_pruning", "06_stacking",
                              "05_benchmark"]  # by kind: the 06 technique runs before the 05 benchmark
    assert pipeline.producers("05_benchmark") == pipeline.NAMES[:-1]
    assert pipeline.before("03_quantization") == ["01_data_teacher", "02_distillation"]


def test_a_technique_listed_after_the_benchmark_still_runs_before_it():
    declared = [*pipeline.DECLARED, pipeline.StageEntry("07_lowrank", "07", "technique")]
    order = [s.name for s in pipeline.in_run_order(declared)]
    assert order[-2:] == ["07_lowrank", "05_benchmark"] and order[0] == "01_data_teacher"
