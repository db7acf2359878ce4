"""run_all's records in reports/.state.json: each stage's key (what its result depends on) and the folders it
wrote, whose manifests are checked byte for byte before a stage is skipped as unchanged."""
import hashlib
import json
import os
from pathlib import Path

from lib import manifest
from lib.common import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks_src"
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
    """Where the stage's kernel lists the folders it writes (lib.manifest.record_write); emptied first."""
    log = reports / f".writes-{stage}"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    os.environ[manifest.WRITES_ENV] = str(log)
    return log


def record_outputs(state: dict, stage: str, log: Path, root: Path, keep: bool) -> None:
    """After a stage ran: the folders it wrote, relative to out_dir, go into the state if it succeeded (keep)."""
    os.environ.pop(manifest.WRITES_ENV, None)
    written = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    log.unlink(missing_ok=True)
    if keep:
        rel = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in written]
        state.setdefault(OUTPUTS, {})[stage] = sorted(set(rel))


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
        for folder in folders:
            problem = manifest.problem(Path(root) / folder, required=True)
            if problem:
                found[stage] = problem
                break
    return found
