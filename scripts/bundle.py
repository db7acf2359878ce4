"""`make bundle`: one zip of reports/ and artifacts/model with a manifest (commit, date, run parameters,
size and SHA-256 of every file), for CI systems other than GitHub Actions.

    python scripts/bundle.py [--out-dir .] [--output artifacts/study-bundle-<commit>.zip]
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from any working directory

from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.runinfo import git_commit  # noqa: E402

MANIFEST = "MANIFEST.json"
# Executed notebooks duplicate the HTML; dot files (.state.json) are run_all's bookkeeping.
SKIPPED_DIRS = {"executed"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def collect(out_dir: Path) -> list[str]:
    """Paths (relative to out_dir) of every file that goes in the bundle; an error if the run is missing."""
    for needed, hint in (("reports", "run the study first (make run)"),
                         ("artifacts/model", "run stage 05 first (make run, or run_all.py --only 05)"),
                         ("reports/run_all.json", "run the study with run_all.py, which writes it")):
        if not (out_dir / needed).exists():
            raise FinCompressError(f"nothing to bundle: {out_dir / needed} is missing; {hint}")
    files = []
    for top in ("reports", "artifacts/model"):
        for path in sorted((out_dir / top).rglob("*")):
            rel = path.relative_to(out_dir)
            if path.is_file() and not any(p.startswith(".") or p in SKIPPED_DIRS for p in rel.parts):
                files.append(rel.as_posix())
    return files


def manifest(out_dir: Path, files: list[str]) -> dict:
    reports = out_dir / "reports"
    # run_all.json covers the last invocation only (`--only 05` names one stage): each stage's own JSON
    # says which commit and parameters made the report that is in the bundle.
    stages = {}
    for path in sorted(reports.glob("*.json")):
        info = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(info, dict) and isinstance(info.get("run_info"), dict):
            stages[path.stem] = {k: info["run_info"].get(k) for k in ("git_commit", "params")}
    return {"commit": git_commit(), "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run": json.loads((reports / "run_all.json").read_text(encoding="utf-8")),
            "stages": stages,
            "files": [{"path": f, "bytes": (out_dir / f).stat().st_size, "sha256": sha256(out_dir / f)} for f in files]}


def write_bundle(out_dir: Path, output: Path) -> dict:
    """Zip to a temp file beside `output`, then rename: a failed bundle never leaves a half zip."""
    out_dir = Path(out_dir).resolve()
    files = collect(out_dir)
    man = manifest(out_dir, files)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in files:
                zf.write(out_dir / rel, rel)
            zf.writestr(MANIFEST, json.dumps(man, indent=2) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a bundle is meant to be shared
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return man


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("."), help="folder holding reports/ and artifacts/model")
    p.add_argument("--output", type=Path, help="zip to write (default: artifacts/study-bundle-<commit>.zip there)")
    args = p.parse_args(argv)
    output = args.output or args.out_dir / "artifacts" / f"study-bundle-{git_commit()}.zip"
    man = write_bundle(args.out_dir, output)
    size = sum(f["bytes"] for f in man["files"])
    print(f"bundle: wrote {output} ({len(man['files'])} files, {size / 1e6:.1f} MB before compression, commit {man['commit']})")
    return 0


if __name__ == "__main__":
    run_cli(main, "bundle")
