"""Files the study writes and reads: folders and files replaced atomically, strict JSON, paths relative to the run.
Torch-free."""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lib.core.errors import FinCompressError
from lib.core.manifest import record_write, write_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def atomic_dir(final: Path):
    """Yield a temp dir next to `final`; it replaces `final` only if the block finishes.

    An interrupted or failed save leaves the previous `final` untouched, so a later
    stage never loads a half-written checkpoint. The folder arrives with its MANIFEST.json (lib.core.manifest).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a process that was killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; artifacts are meant to be shared
    try:
        yield tmp
        write_manifest(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for f in tmp.rglob("*"):  # some writers (safetensors) create 0600 files; artifacts are shared
        f.chmod(0o755 if f.is_dir() else 0o644)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    record_write(final)


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are published
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    """Strict JSON: NaN and infinities become null, since browsers and jq reject them."""
    write_text_atomic(path, json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(o):
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return o


def read_json(path: Path, what: str = "metrics"):
    path = Path(path)
    if not path.exists():
        raise FinCompressError(f"{what} file {path} does not exist; run the stage that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def relative_path(path, root: Path) -> str:
    """Relative to out_dir as the stage contract asks; a model given outside it stays absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def student_folder(key: str, root: Path, cwd: Path | None = None) -> Path:
    """A student_dir parameter's model folder: absolute, relative to the working dir (cwd), or to out_dir (root)."""
    path = Path(key).expanduser()
    if not path.is_absolute():
        here = Path(cwd or Path.cwd()) / path
        path = here if here.exists() else Path(root) / path
    if not (path / "config.json").is_file():
        raise FinCompressError(f"student_dir {key} is not a save_pretrained folder (no config.json); pass a model "
                               "folder, leave it empty for stage 02's best student, or none")
    return path


def stage_paths(out_dir) -> dict:
    out = Path(out_dir).resolve()
    return {"root": out, "data": out / "data", "checkpoints": out / "checkpoints", "logs": out / "logs",
            "reports": out / "reports"}
