"""run_all's records in reports/.state.json: each stage's key (what its result depends on) and the folders it
wrote, whose manifests are checked byte for byte before a stage is skipped as unchanged."""
import hashlib
import json
import os
from pathlib import Path

from lib.core import manifest
from lib.core.files import REPO_ROOT
from lib.core.pipeline import NOTEBOOKS
OUTPUTS = "outputs"  # the state's entry: stage -> folders it wrote (relative to out_dir)


def fingerprint(stage: str, params: dict, upstream: list[str]) -> str:
    """Hash of what a stage's result depends on: its notebook, lib code, parameters, input data, upstream runs."""
    h = hashlib.sha256()
    h.update((NOTEBOOKS / f"{stage}.py").read_bytes())
    for f in sorted((REPO_ROOT / "lib").rglob("*.py")):
        h.update(str(f.relative_to(REPO_ROOT)).encode() + f.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    if params.get("data_dir"):
        for f in sorted(Path(params["data_dir"]).rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps(upstream).encode())
    return h.hexdigest()[:16]


def load_state(reports: Path) -> dict:
    path = reports / ".state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def up_to_date(stage: str, key: str, state: dict, reports: Path) -> bool:
    outputs = [reports / f"{stage}.json", reports / f"{stage}.html"]
    return state.get(stage) == key and all(p.is_file() for p in outputs)


def writes_log(reports: Path, stage: str) -> Path:
    """Where the stage's kernel lists the folders it writes (lib.core.manifest.record_write); emptied first."""
    log = reports / f".writes-{stage}"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    os.environ[manifest.WRITES_ENV] = str(log)
    return log


def inside(root: Path, folder) -> bool:
    """Whether a written or recorded folder lies in the out dir: only those are a run's outputs. Judged by name,
    as the stage built it from out_dir: a symlink in the out dir (checkpoints/ on another disk) stays inside."""
    return Path(os.path.normpath(Path(root) / folder)).is_relative_to(os.path.normpath(root))


def record_outputs(state: dict, stage: str, log: Path, root: Path, keep: bool) -> None:
    """After a stage ran: the folders it wrote, relative to out_dir, go into the state if it succeeded (keep).
    A folder outside the out dir (scratch under the temp folder) is no output of the run, and never recorded."""
    os.environ.pop(manifest.WRITES_ENV, None)
    written = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    log.unlink(missing_ok=True)
    if keep:
        for path in sorted({p for p in written if not inside(root, p)}):
            print(f"run_all: {stage} wrote {path}, outside the out dir {root}: not tracked as one of its outputs")
        rel = {os.path.relpath(os.path.normpath(p), os.path.normpath(root)) for p in written if inside(root, p)}
        state.setdefault(OUTPUTS, {})[stage] = sorted(rel)


def forget(state: dict, stage: str) -> None:
    state.pop(stage, None)
    state.get(OUTPUTS, {}).pop(stage, None)


def damaged_outputs(state: dict, root: Path) -> dict[str, str]:
    """stage -> the first damaged or missing file among the folders it wrote (every byte hashed), for each
    stage recorded as done."""
    found = {}
    for stage, folders in state.get(OUTPUTS, {}).items():
        if stage not in state:
            continue
        # An older run_all recorded scratch folders under the temp folder too: gone by design, not damage.
        for folder in (f for f in folders if inside(root, f)):
            problem = manifest.problem(Path(root) / folder, required=True)
            if problem:
                found[stage] = problem
                break
    return found
