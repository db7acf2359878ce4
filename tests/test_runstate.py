"""lib/run/runstate.py and run_all's skip decision: a stage's key follows its notebook, lib/, parameters, data and
upstream runs; an unchanged stage is skipped, --force and a changed key re-run it (issue 23, mutation 2)."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import run_all
from lib.core import manifest
from lib.core.files import REPO_ROOT
from lib.run import runstate

STAGE = "01_data_teacher"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A copy of the notebooks and lib/ that the test may edit; fingerprint() reads this copy."""
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "notebooks_src", root / "notebooks_src")
    shutil.copytree(REPO_ROOT / "lib", root / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runstate, "REPO_ROOT", root)
    monkeypatch.setattr(runstate, "NOTEBOOKS", root / "notebooks_src")
    return root


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_a_changed_notebook_cell_changes_the_key(repo):
    base = runstate.fingerprint(STAGE, {"epochs": 1}, [])
    assert base == runstate.fingerprint(STAGE, {"epochs": 1}, []) and len(base) == 16
    edit(repo / "notebooks_src" / f"{STAGE}.py", "# %%", "# %%\nprint('one more line in a cell')")
    assert runstate.fingerprint(STAGE, {"epochs": 1}, []) != base


def test_a_changed_lib_function_changes_the_key(repo):
    base = runstate.fingerprint(STAGE, {"epochs": 1}, [])
    edit(repo / "lib" / "core" / "stats.py", "return f1 / classes", "return f1 / classes * 1.0")
    changed = runstate.fingerprint(STAGE, {"epochs": 1}, [])
    assert changed != base
    # a file moved to another name with the same bytes is another module: the path is part of the key
    (repo / "lib" / "core" / "stats.py").rename(repo / "lib" / "core" / "stats2.py")
    assert runstate.fingerprint(STAGE, {"epochs": 1}, []) not in (base, changed)


def test_a_new_lib_module_in_a_subfolder_changes_the_key(repo):
    base = runstate.fingerprint(STAGE, {}, [])
    (repo / "lib" / "stages" / "extra.py").write_text("X = 1\n")
    assert runstate.fingerprint(STAGE, {}, []) != base


def test_parameters_data_files_and_upstream_change_the_key(repo, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("one")
    params = {"epochs": 1, "data_dir": str(data)}
    base = runstate.fingerprint(STAGE, params, ["k1"])
    assert base == runstate.fingerprint(STAGE, dict(reversed(params.items())), ["k1"])  # key order is not a change
    assert base != runstate.fingerprint(STAGE, {**params, "epochs": 2}, ["k1"])
    assert base != runstate.fingerprint(STAGE, params, ["k2"])
    assert base != runstate.fingerprint("02_distillation", params, ["k1"])
    (data / "sub" / "a.txt").write_text("three")  # a data file of another size, deep in the folder
    assert runstate.fingerprint(STAGE, params, ["k1"]) != base


def test_up_to_date_needs_the_same_key_and_both_reports(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    state = {STAGE: "key"}
    (reports / f"{STAGE}.json").write_text("{}")
    assert not runstate.up_to_date(STAGE, "key", state, reports)  # its HTML is missing
    (reports / f"{STAGE}.html").write_text("")
    assert runstate.up_to_date(STAGE, "key", state, reports)
    assert not runstate.up_to_date(STAGE, "other", state, reports)
    assert not runstate.up_to_date("02_distillation", "key", state, reports)


def test_written_folders_are_recorded_relative_only_for_a_successful_stage(tmp_path, monkeypatch):
    monkeypatch.delenv(manifest.WRITES_ENV, raising=False)
    reports = tmp_path / "reports"
    log = runstate.writes_log(reports, STAGE)
    assert log == reports / f".writes-{STAGE}" and not log.exists()
    import os
    assert os.environ[manifest.WRITES_ENV] == str(log)
    log.write_text(f"{tmp_path / 'checkpoints' / 'b'}\n{tmp_path / 'a'}\n{tmp_path / 'a'}\n")
    state = {}
    runstate.record_outputs(state, STAGE, log, tmp_path, keep=True)
    assert state == {"outputs": {STAGE: ["a", "checkpoints/b"]}}
    assert not log.exists() and manifest.WRITES_ENV not in os.environ
    runstate.writes_log(reports, "02_distillation").write_text(f"{tmp_path / 'x'}\n")
    runstate.record_outputs(state, "02_distillation", reports / ".writes-02_distillation", tmp_path, keep=False)
    assert "02_distillation" not in state["outputs"]
    runstate.record_outputs(state, "03_quantization", reports / ".writes-none", tmp_path, keep=True)
    assert state["outputs"]["03_quantization"] == []


def test_a_stale_writes_log_is_emptied_and_forget_drops_both_records(tmp_path):
    (tmp_path / f".writes-{STAGE}").write_text("/old/run\n")
    assert not runstate.writes_log(tmp_path, STAGE).exists()
    state = {STAGE: "k", "02_distillation": "k2", "outputs": {STAGE: ["a"], "02_distillation": ["b"]}}
    runstate.forget(state, STAGE)
    assert state == {"02_distillation": "k2", "outputs": {"02_distillation": ["b"]}}
    runstate.forget({}, STAGE)  # nothing recorded: nothing to drop, no error


def test_load_state_reads_the_file_or_starts_empty(tmp_path):
    assert runstate.load_state(tmp_path) == {}
    (tmp_path / ".state.json").write_text(json.dumps({STAGE: "k"}))
    assert runstate.load_state(tmp_path) == {STAGE: "k"}


def test_damaged_outputs_skip_stages_not_recorded_as_done(tmp_path):
    state = {"outputs": {STAGE: ["gone"]}}  # a stage that failed keeps no key: its folders are not judged
    assert runstate.damaged_outputs(state, tmp_path) == {}
    state[STAGE] = "k"
    state["outputs"][STAGE] = ["gone", "also_gone"]
    assert runstate.damaged_outputs(state, tmp_path) == {STAGE: f"{tmp_path / 'gone'} is missing"}


def runs(tmp_path, monkeypatch, *flags: str, work=lambda: None) -> tuple[list, dict]:
    """run_all.run_stages over stage 01 with a stub kernel that calls work(); returns the stages it ran and the state."""
    ran = []

    def stub(stage, params, reports):
        ran.append(stage)
        work()
        for suffix in ("json", "html"):
            (reports / f"{stage}.{suffix}").write_text("{}")
        return True, ""
    monkeypatch.setattr(run_all, "run_interruptible", stub)
    args = run_all.parse_args(["--out-dir", str(tmp_path), *flags])
    reports = tmp_path / "reports"
    state = runstate.load_state(reports)
    statuses, _, failed = run_all.run_stages([STAGE], {STAGE: {"epochs": 1}}, args, (state, {}), tmp_path)
    assert failed is None and set(statuses) == {STAGE}
    return ran, json.loads((reports / ".state.json").read_text())


def test_an_unchanged_stage_is_skipped_and_force_or_an_edit_reruns_it(repo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert runs(out, monkeypatch)[0] == [STAGE]
    ran, state = runs(out, monkeypatch)
    assert ran == [] and STAGE in state
    assert runs(out, monkeypatch, "--force")[0] == [STAGE]
    edit(repo / "lib" / "core" / "goals.py", "return all(", "return all(  # edited\n        ")
    assert runs(out, monkeypatch)[0] == [STAGE]
    assert runs(out, monkeypatch)[0] == []


def test_damaged_outputs_read_every_done_stage_whatever_comes_first(tmp_path):
    assert runstate.damaged_outputs({}, tmp_path) == {}  # a first run: no records at all
    state = {"02_distillation": "k", "outputs": {STAGE: ["not_done"], "02_distillation": ["gone"]}}
    assert runstate.damaged_outputs(state, tmp_path) == {"02_distillation": f"{tmp_path / 'gone'} is missing"}


def test_folders_outside_the_out_dir_are_never_recorded(tmp_path, capsys):
    """Issue 33 item 1: scratch folders under the temp folder were recorded as outputs, so every rerun found
    them missing. Only the out dir's folders are recorded, judged by name: a symlinked one is still inside."""
    out, disk = tmp_path / "out", tmp_path / "other_disk"
    (out / "reports").mkdir(parents=True)
    disk.mkdir()
    (out / "checkpoints").symlink_to(disk, target_is_directory=True)
    log = out / "reports" / f".writes-{STAGE}"
    log.write_text("\n".join([str(out / "checkpoints" / "teacher"), str(out / "data"), "/tmp/tmp3wz06e1y/x_onnx_static_int8",
                              str(out / ".." / "sibling"), ""]))
    state = {}
    runstate.record_outputs(state, STAGE, log, out, keep=True)
    assert state == {"outputs": {STAGE: ["checkpoints/teacher", "data"]}}
    said = capsys.readouterr().out.splitlines()
    assert said == [f"run_all: {STAGE} wrote {p}, outside the out dir {out}: not tracked as one of its outputs"
                    for p in sorted(["/tmp/tmp3wz06e1y/x_onnx_static_int8", str(out / ".." / "sibling")])]


def test_a_stage_run_twice_is_skipped_whatever_scratch_it_saved(repo, tmp_path, monkeypatch):
    """A stage that saves scratch under the temp folder through atomic_dir (stage 03's calibration trials did)
    and its real output: the second run skips it, and the state names only the real output."""
    import tempfile
    from lib.core.files import atomic_dir
    out = tmp_path / "out"

    def work():
        with tempfile.TemporaryDirectory() as scratch, atomic_dir(Path(scratch) / "trial") as t:
            (t / "w.bin").write_bytes(b"scratch")
        with atomic_dir(out / "checkpoints" / "teacher") as t:
            (t / "w.bin").write_bytes(b"kept")
    assert runs(out, monkeypatch, work=work)[0] == [STAGE]
    ran, state = runs(out, monkeypatch, work=work)
    assert ran == [] and state["outputs"] == {STAGE: ["checkpoints/teacher"]}


def test_an_old_state_naming_gone_temp_folders_neither_stops_nor_reruns(repo, tmp_path, monkeypatch):
    """A state file written before the fix, with stage 03's calibration trials under the temp folder: --only 05
    is not stopped by them, and a plain rerun skips the stage instead of redoing it (and the ones after it)."""
    out = tmp_path / "out"
    assert runs(out, monkeypatch)[0] == [STAGE]
    path = out / "reports" / ".state.json"
    old = json.loads(path.read_text())
    old["outputs"] = {STAGE: ["/tmp/tmp3wz06e1y/student_kd_intermediate_entropy_onnx_static_int8", "../elsewhere"]}
    path.write_text(json.dumps(old))
    assert runstate.damaged_outputs(old, out) == {}
    lock = SimpleNamespace(acquire=lambda: None)
    assert run_all.take_out_dir(lock, out, ["05_benchmark"]) == (old, {})
    assert runs(out, monkeypatch)[0] == []
