"""Plumbing every stage shares: seeding, device, data-parallel groups, atomic writes, run metadata."""
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
import io
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import torch

from lib.errors import FinCompressError  # noqa: F401  (re-exported: the one user-facing error)
from lib.manifest import record_write, write_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def resolve_device(gpu: bool) -> torch.device:
    """The one place the device is chosen: --gpu means CUDA (this rank's GPU under a launcher), else CPU."""
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FinCompressError("--gpu was given but no CUDA device is visible; drop --gpu to run on the CPU")
    _, local_rank, world = dist_env()
    if world > 1:
        if local_rank >= torch.cuda.device_count():
            raise FinCompressError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                                   "launch at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cuda")


def dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as set by torchrun or accelerate launch; (0, 0, 1) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_GROUPS = [0]  # process groups this process has made: each one gets its own port


@contextmanager
def data_parallel(device: torch.device, timeout_s: float = 1800):
    """Join the launcher's ranks for one training run (yields False when not launched data-parallel).

    The group is torn down afterwards because transformers' save_pretrained writes nothing on
    ranks > 0 while a group exists, and every rank keeps its own copy of the outputs.
    """
    import torch.distributed as dist
    rank, _, world = dist_env()
    if world == 1:
        yield False
        return
    port = os.environ.get("FINCOMPRESS_DDP_PORT")  # set by run_all: one port range per stage
    # A fresh port per group: rank 0's kernel hosts the store, and a reused one could hold stale keys.
    init = f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{int(port) + _GROUPS[0]}" if port else "env://"
    _GROUPS[0] += 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield True
    finally:
        dist.destroy_process_group()


@contextmanager
def quiet():
    """torch.ao.quantization and the legacy quantized-tensor API warn that they are deprecated (still the
    only eager INT8 CPU path in torch 2.13); the ONNX exporter prints progress. Neither helps a report."""
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@contextmanager
def atomic_dir(final: Path):
    """Yield a temp dir next to `final`; it replaces `final` only if the block finishes.

    An interrupted or failed save leaves the previous `final` untouched, so a later
    stage never loads a half-written checkpoint. The folder arrives with its MANIFEST.json (lib.manifest).
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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        # reports/ is the pipeline's own output: stage 01 rewriting it must not mark stage 02's code "-dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)reports"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict:
    from importlib import metadata
    names = ["torch", "transformers", "datasets", "scikit-learn", "numpy", "onnxruntime", "onnx", "papermill"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_info(seed: int, device: torch.device, params: dict | None = None) -> dict:
    """Everything needed to say where and how a number was produced."""
    hw = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
          "platform": platform.platform()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return {"seed": seed, "device": str(device), "git_commit": git_commit(), "versions": package_versions(),
            "hardware": hw, "params": params or {}}


def format_run_info(info: dict) -> str:
    v = ", ".join(f"{k} {x}" for k, x in info["versions"].items())
    hw = info["hardware"]
    lines = [f"seed {info['seed']} | device {info['device']} | git {info['git_commit']}",
             f"hardware: {hw['cpu']} ({hw['cpu_count']} cores, torch threads {hw['torch_threads']})"
             + (f", GPU {hw['gpu']}" if "gpu" in hw else ""),
             f"versions: {v}"]
    if info.get("params"):
        lines.append("params: " + ", ".join(f"{k}={x!r}" for k, x in info["params"].items()))
    return "\n".join(lines)


def stage_paths(out_dir) -> dict:
    out = Path(out_dir).resolve()
    return {"root": out, "data": out / "data", "checkpoints": out / "checkpoints", "logs": out / "logs",
            "reports": out / "reports"}
