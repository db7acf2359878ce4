"""Checkpoint manifests: the size and SHA-256 of every file of a saved folder, and the stage that wrote it.

lib.core.files.atomic_dir writes MANIFEST.json inside the temp dir before the rename, so a folder and its manifest
appear together. run_all's skip logic checks every byte of a stage's outputs (full SHA-256) before it trusts
them; loaders (check) do too, with each digest cached per user so that a second load reads no weights.
Torch-free: ONNX serving and run_all's checks import it.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

from lib.core import pipeline
from lib.core.errors import FinCompressError
from lib.core.params import PLAN_ENV

MANIFEST = "MANIFEST.json"
# Set by run_all for the stage it runs: every atomic_dir appends its final path here, so run_all learns which
# folders the stage wrote and can check them before skipping it next time.
WRITES_ENV = "FINCOMPRESS_WRITES"
HASH_AT_LOAD = 16 * 2**20  # pre-flight's quick look at a teacher folder hashes files up to this size
# The digest cache of check(). It lives in the user's cache folder, never in the folder it vouches for, and is
# ignored when anyone but its owner could write it. A digest is reused only for the same file (device, inode) with
# the same size, mtime and ctime; ctime cannot be set by utime(), so rewriting a file and forging its mtime back
# still misses. Not caught from the cache: damage below the filesystem (a failing disk changes bytes, not
# times); delete the cache file to rehash everything. Whoever can write as the user can forge the cache, but could
# as well rewrite the files and MANIFEST.json: a manifest detects damage, it does not authenticate a folder.
CACHE_FILE = "sha256-cache.json"
CACHE_ENTRIES = 512  # about 70 model folders of 7 files; the oldest digests go first


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


def problem(folder: Path, hash_limit: float = float("inf"), required: bool = False, digest=sha256) -> str | None:
    """What is wrong with a saved folder, or None: a missing or resized file, or (up to hash_limit bytes) one whose
    digest(path) is not its manifest's SHA-256."""
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
        if size <= hash_limit and digest(path) != want["sha256"]:
            return f"{path} is damaged (its SHA-256 differs from its manifest's)"
    return None


def writer(folder: Path) -> str | None:
    """The stage that wrote a folder, from its manifest."""
    return (read_manifest(folder) or {}).get("stage")


def rerun_hint(stage: str) -> str:
    key = next((s.key for s in pipeline.STAGES if s.name == stage), stage)
    return f"stage {stage} (python run_all.py --only {key})"


def check(folder: Path) -> None:
    """Before a load: one line naming the damaged file and the stage to re-run (sizes, SHA-256 of every file)."""
    where = cache_path()
    cache = read_cache(where) if where else {}
    known, used = set(cache), []
    found = problem(folder, digest=lambda path: cached_sha256(path, cache, used))
    if where and not known.issuperset(cache):
        write_cache(where, {**{k: v for k, v in cache.items() if k not in used}, **{k: cache[k] for k in used}})
    if found:
        stage = writer(folder)
        fix = f"re-run {rerun_hint(stage)}" if stage else "save it again (no run_all stage wrote it)"

        raise FinCompressError(f"{found}; {fix}")


def cache_path() -> Path | None:
    """$XDG_CACHE_HOME/fincompress (else ~/.cache/fincompress)'s digest cache; None without a home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    try:
        return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "fincompress" / CACHE_FILE
    except RuntimeError:  # no HOME and no passwd entry
        return None


def read_cache(path: Path) -> dict:
    """{file key: SHA-256} from the cache file; empty when absent, unreadable, or writable by anyone but us."""
    try:
        st = path.stat()
        if st.st_mode & 0o022 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            return {}
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in cache.items() if isinstance(v, str) and len(v) == 64} if isinstance(cache, dict) else {}


def write_cache(path: Path, cache: dict) -> None:
    """The newest CACHE_ENTRIES digests, written to a temp file and renamed; a cache that cannot be written is none."""
    tmp = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(list(cache.items())[-CACHE_ENTRIES:]), f)
        os.replace(tmp, path)
    except OSError:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def file_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def cached_sha256(path: Path, cache: dict, used: list) -> str:
    """sha256(path), read from `cache` when the same file is unchanged since; `used` collects the keys read."""
    key = file_key(path)
    if key not in cache:
        found = sha256(path)
        if file_key(path) != key:  # written while it was read: the digest belongs to no one state of the file
            return found
        cache[key] = found
    used.append(key)
    return cache[key]
