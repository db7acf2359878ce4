"""Publishing: the GitHub workflows (actionlint, zizmor), `make bundle` and the Makefile (the Hub data layout: test_hub_data.py)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, load_script

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    """A test tool from requirements-dev.txt: next to this Python first, then on PATH."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found; install the test tools: pip install -r requirements-dev.txt")
    return found


def lint(*files: Path) -> subprocess.CompletedProcess:
    # -shellcheck names it explicitly: without it on PATH actionlint silently skips the run: scripts.
    cmd = [tool("actionlint"), "-color=false", f"-shellcheck={tool('shellcheck')}", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def audit(*files: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN")}
    cmd = [tool("zizmor"), "--offline", "--no-progress", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_both_workflows_exist():
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "study.yml"]


def test_workflows_pass_actionlint():
    proc = lint(*WORKFLOWS)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_workflows_pass_zizmor():
    proc = audit(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_linters_fail_on_a_broken_workflow(tmp_path):
    """The two checks above can fail: a typo'd step output and an unquoted path fail actionlint; a tag-pinned
    action that keeps the token on disk fails zizmor."""
    text = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    typo = tmp_path / "typo.yml"
    typo.write_text(text.replace("steps.revisions.outputs.key", "steps.revision.outputs.key", 1))
    assert lint(typo).returncode != 0
    unquoted = tmp_path / "unquoted.yml"
    unquoted.write_text(text.replace('fetch "$RUNNER_TEMP/fincompress-data"', "fetch $RUNNER_TEMP/fincompress-data"))
    assert "SC2086" in lint(unquoted).stdout
    unsafe = tmp_path / "unsafe.yml"
    checkout = next(line for line in text.splitlines() if "actions/checkout@" in line)
    unsafe.write_text(text.replace(checkout, "      - uses: actions/checkout@v7").replace("persist-credentials: false", "fetch-depth: 1"))
    assert lint(unsafe).returncode == 0  # valid syntax: only the audit objects
    proc = audit(unsafe)
    assert proc.returncode != 0 and "artipacked" in proc.stdout and "unpinned-uses" in proc.stdout, proc.stdout


def steps(workflow: str) -> list[dict]:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / workflow).read_text())
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def test_workflow_security_shape():
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        assert doc["permissions"] == {}, path.name
        assert all("permissions" in job for job in doc["jobs"].values()), path.name
        for step in steps(path.name):
            if "uses" in step:
                ref = step["uses"].split("@")[1]
                assert len(ref) == 40 and int(ref, 16) >= 0, step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_study_uploads_survive_a_failed_stage():
    study = yaml.safe_load((REPO / ".github" / "workflows" / "study.yml").read_text())
    assert study["concurrency"]["cancel-in-progress"] is False
    run = next(s for s in steps("study.yml") if "run_all.py" in s.get("run", ""))
    assert "--gpu" in run["run"] and "--data-dir" in run["run"]
    uploads = [s for s in steps("study.yml") if s.get("uses", "").startswith("actions/upload-artifact@")]
    tops = {s["with"]["path"].splitlines()[0] for s in uploads}
    assert tops == {"${{ runner.temp }}/study/reports/", "${{ runner.temp }}/study/artifacts/model/"}
    assert '--out-dir "$RUNNER_TEMP/study"' in run["run"]
    for s in uploads:
        assert "always()" in s["if"] and "github.sha" in s["with"]["name"] and s["with"]["retention-days"] > 0
    used = {s["uses"].split("@")[0] for s in steps("study.yml") if "uses" in s}
    assert {"actions/upload-pages-artifact", "actions/deploy-pages", "actions/cache/restore"} <= used


# --- make bundle ---------------------------------------------------------------------------------------

def fake_study(root: Path) -> dict:
    files = {"reports/index.html": b"<html>index</html>", "reports/05_benchmark.html": b"<html>05</html>",
             "reports/05_benchmark.json": json.dumps({"stage": "05_benchmark", "run_info": {"git_commit": "abc1234", "params": {"seed": 7}}}).encode(),
             "reports/run_all.json": json.dumps({"stages": ["05_benchmark"], "smoke": True, "gpu": False,
                                                 "parameters": {"05_benchmark": {"max_test": 24}}}).encode(),
             "artifacts/model/model.onnx": os.urandom(50_000), "artifacts/model/tokenizer.json": b'{"v": 1}'}
    skipped = {"reports/executed/05_benchmark.ipynb": b"{}", "reports/.state.json": b"{}"}
    for rel, data in {**files, **skipped}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def run_bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "bundle.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_bundle_manifest_matches_its_files(tmp_path):
    files = fake_study(tmp_path / "run")
    out = tmp_path / "out" / "study.zip"
    proc = run_bundle("--out-dir", str(tmp_path / "run"), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as zf:
        man = json.loads(zf.read("MANIFEST.json"))
        assert sorted(zf.namelist()) == sorted([*files, "MANIFEST.json"])
        for entry in man["files"]:
            data = zf.read(entry["path"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == hashlib.sha256(files[entry["path"]]).hexdigest()
            assert len(data) == entry["bytes"]
    assert {e["path"] for e in man["files"]} == set(files)
    assert man["run"]["parameters"] == {"05_benchmark": {"max_test": 24}} and man["stages"] == {"05_benchmark": {"git_commit": "abc1234", "params": {"seed": 7}}}
    assert man["commit"] and man["created_utc"]
    assert [p.name for p in out.parent.iterdir()] == ["study.zip"]  # no temp file left behind


def test_bundle_without_a_model_is_one_line_and_writes_nothing(tmp_path):
    fake_study(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "artifacts" / "model")
    proc = run_bundle("--out-dir", str(tmp_path / "run"), "--output", str(tmp_path / "out" / "b.zip"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "artifacts/model is missing" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "b.zip").exists()


# --- Makefile: data fallback, install stamps, Python check (dry runs in a copy, nothing installed) ------

def make_copy(tmp_path: Path, shared: bool) -> Path:
    """The Makefile and requirements in tmp/repo with installed stamps newer than both; tmp/shared/data if asked."""
    repo = tmp_path / "repo"
    (repo / ".venv").mkdir(parents=True)
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(REPO / name, repo / name)
        os.utime(repo / name, (1_000_000, 1_000_000))
    for stamp, t in ((".installed", 2_000_000), (".installed-dev", 3_000_000)):
        (repo / ".venv" / stamp).touch()
        os.utime(repo / ".venv" / stamp, (t, t))
    if shared:
        (tmp_path / "shared" / "data").mkdir(parents=True)
    return repo


# What an outer `make test VENV=... DATA_DIR=...` exports (command-line variables reach recipes as environment
# variables, and MAKEFLAGS carries them too): each would override the copy's own defaults.
MAKE_VARIABLES = ("DATA_DIR", "FINCOMPRESS_DATA_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTHON",
                  "VENV", "RUN_ARGS", "TORCH_INDEX_URL", "BUNDLE_ARGS")


def make_n(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
    return subprocess.run(["make", "-n", *args], cwd=repo, capture_output=True, text=True, timeout=60, env=env)


def test_make_run_falls_back_to_the_hub(tmp_path):
    repo = make_copy(tmp_path, shared=False)
    out = make_n(repo, "run").stdout
    assert "run_all.py" in out and "--data-dir" not in out and "pip install" not in out
    assert "--data-dir /elsewhere" in make_n(repo, "run", "DATA_DIR=/elsewhere").stdout
    proc = make_n(repo, "test")  # the tests need the files: refused before any install
    assert proc.returncode == 2 and "pass DATA_DIR=/path" in proc.stderr and "pip" not in proc.stdout


def test_make_run_uses_shared_data_beside_the_clone(tmp_path):
    repo = make_copy(tmp_path, shared=True)
    assert "run_all.py --data-dir ../shared/data" in make_n(repo, "run").stdout
    assert "run_all.py" in make_n(repo, "run", "DATA_DIR=").stdout and "--data-dir" not in make_n(repo, "run", "DATA_DIR=").stdout
    assert f"FINCOMPRESS_DATA_DIR={tmp_path / 'shared' / 'data'}" in make_n(repo, "test").stdout


def test_install_stamps_follow_each_requirements_file(tmp_path):
    repo = make_copy(tmp_path, shared=True)
    os.utime(repo / "requirements-dev.txt", (4_000_000, 4_000_000))
    test, run = make_n(repo, "test").stdout, make_n(repo, "run").stdout
    assert "-r requirements-dev.txt" in test and "-r requirements.txt" not in test
    assert "pip install" not in run  # make run never installs the test tools
    os.utime(repo / "requirements.txt", (5_000_000, 5_000_000))
    test = make_n(repo, "test", f"PYTHON={sys.executable}").stdout
    assert test.index("torch==2.13.0") < test.index("-r requirements.txt") < test.index("-r requirements-dev.txt")


def test_install_refuses_an_unsupported_python_in_one_line(tmp_path):
    repo = make_copy(tmp_path, shared=True)
    (repo / ".venv" / ".installed").unlink()
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9\n")
    old.chmod(0o755)
    proc = make_n(repo, "install", f"PYTHON={old}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is 3.9: FinCompress needs Python 3.11 to 3.14" in proc.stderr and "venv" not in proc.stdout
    assert "is not found" in make_n(repo, "install", "PYTHON=no-such-python").stderr
    assert f"{sys.executable} -m venv" in make_n(repo, "install", f"PYTHON={sys.executable}").stdout
