"""Checkpoint manifests: the size and SHA-256 of every file of a saved folder, and the stage that wrote it.

common.atomic_dir writes MANIFEST.json inside the temp dir before the rename, so a folder and its manifest
appear together. run_all's skip logic checks every byte of a stage's outputs (full SHA-256) before it trusts
them; loaders check sizes (a truncated or missing file) and the SHA-256 of files up to HASH_AT_LOAD bytes
(configs, tokenizers, small models), so a load costs no second read of a large weight file.
Torch-free: ONNX serving and run_all's checks import it.
"""
import hashlib
import json
import os
from pathlib import Path

from lib import pipeline
from lib.errors import FinCompressError
from lib.params import PLAN_ENV

MANIFEST = "MANIFEST.json"
# Set by run_all for the stage it runs: every atomic_dir appends its final path here, so run_all learns which
# folders the stage wrote and can check them before skipping it next time.
WRITES_ENV = "FINCOMPRESS_WRITES"
HASH_AT_LOAD = 16 * 2**20


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """MANIFEST.json for every file under `folder` (itself excluded); the stage comes from run_all's plan."""
    folder = Path(folder)
    files = {f.relative_to(folder).as_posix(): {"bytes": f.stat().st_size, "sha256": sha256(f)}
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}
    stage = json.loads(os.environ.get(PLAN_ENV) or "{}").get("stage")
    (folder / MANIFEST).write_text(json.dumps({"stage": stage, "files": files}, indent=1) + "\n", encoding="utf-8")


def record_write(final: Path) -> None:
    """Tell run_all (when it runs this stage) that `final` was written."""
    log = os.environ.get(WRITES_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            # The path as the stage named it, not resolved: a symlinked folder of the out dir is still in it.
            f.write(os.path.abspath(final) + "\n")


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest; None when it has none (written before manifests, or not by FinCompress)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["files"].items()
        return manifest
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"stage": None, "files": {}, "unreadable": True}


def problem(folder: Path, hash_limit: float = float("inf"), required: bool = False) -> str | None:
    """What is wrong with a saved folder, or None: a missing or resized file, or (up to hash_limit bytes) a changed one."""
    folder = Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        return f"{folder} is missing" if not folder.is_dir() else (f"{folder / MANIFEST} is missing" if required else None)
    if manifest.get("unreadable"):
        return f"{folder / MANIFEST} is unreadable"
    for name, want in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{path} is damaged ({size:,} bytes, its manifest says {want['bytes']:,})"
        if size <= hash_limit and sha256(path) != want["sha256"]:
            return f"{path} is damaged (its SHA-256 differs from its manifest's)"
    return None


def writer(folder: Path) -> str | None:
    """The stage that wrote a folder, from its manifest."""
    return (read_manifest(folder) or {}).get("stage")


def rerun_hint(stage: str) -> str:
    key = next((s.key for s in pipeline.STAGES if s.name == stage), stage)
    return f"stage {stage} (python run_all.py --only {key})"


def check(folder: Path) -> None:
    """Before a load: one line naming the damaged file and the stage to re-run (sizes, SHA-256 of small files)."""
    found = problem(folder, HASH_AT_LOAD)
    if found:
        stage = writer(folder)
        fix = f"re-run {rerun_hint(stage)}" if stage else "save it again (no run_all stage wrote it)"

        raise FinCompressError(f"{found}; {fix}")
