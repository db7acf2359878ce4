"""Where and how a number was produced: the commit, the CPU, the package versions, and their one-paragraph form.
Torch-free (lib.modeling.device adds the device and torch's threads)."""
import platform
import subprocess
from pathlib import Path

from lib.core.files import REPO_ROOT


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


# the instruction sets that decide how fast INT8 and bf16 kernels run (the README groups results by them)
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The SIMD flags of SIMD_FLAGS this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    return []


def package_versions() -> dict:
    from importlib import metadata
    names = ["torch", "transformers", "datasets", "scikit-learn", "numpy", "onnxruntime", "onnx", "openvino", "nncf",
             "papermill"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_run_info(info: dict) -> str:
    v = ", ".join(f"{k} {x}" for k, x in info["versions"].items())
    hw = info["hardware"]
    lines = [f"seed {info['seed']} | device {info['device']} | git {info['git_commit']}",
             f"hardware: {hw['cpu']} ({hw['cpu_count']} cores, torch threads {hw['torch_threads']}; "
             f"flags {' '.join(hw.get('cpu_flags', [])) or 'unknown'})"
             + (f", GPU {hw['gpu']}" if "gpu" in hw else ""),
             f"versions: {v}"]
    if info.get("params"):
        lines.append("params: " + ", ".join(f"{k}={x!r}" for k, x in info["params"].items()))
    return "\n".join(lines)
