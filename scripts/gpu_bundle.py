"""Which wheels scripts/gpu_bundle.sh must carry to the GPU machine: the run_all stack it lacks, pinned to this venv.

    python scripts/gpu_bundle.py missing    # NAME==VERSION per line: not on the GPU machine, to download
    python scripts/gpu_bundle.py present    # names the stack needs that the GPU machine already has

Walks the installed requirements (markers evaluated for CPython 3.12 on x86_64 Linux) from the notebook
runner's packages, and stops at every package the GPU machine's image already holds: its own versions
(torch, transformers, numpy, ...) must not be replaced.
"""
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

# What run_all needs beyond the study's own libraries, none of it on the GPU machine.
ROOTS = ["papermill", "jupytext", "nbconvert", "nbformat", "nbclient", "ipykernel"]

# Python packages of the GPU machine's image ('cuda', read on 2026-11-17; nvidia-h100-x1 and nvidia-h200).
DEVICE_HAS = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())

TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
          "platform_python_implementation": "CPython"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(name: str, extras: set) -> list[Requirement]:
    """The installed distribution's requirements that apply on the target, base plus the requested extras."""
    out = []
    for text in metadata.distribution(name).requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**TARGET, "extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def closure() -> tuple[dict, set]:
    """(missing name -> installed version, names already on the GPU machine) reachable from ROOTS."""
    missing, present, todo = {}, set(), [(r, set()) for r in ROOTS]
    seen = set()
    while todo:
        name, extras = todo.pop()
        key = (canonical(name), frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        if canonical(name) in DEVICE_HAS:
            present.add(canonical(name))
            continue
        missing[canonical(name)] = metadata.version(name)
        todo += [(req.name, set(req.extras)) for req in requirements(name, extras)]
    return missing, present


def main(argv: list[str]) -> int:
    missing, present = closure()
    if argv[1:] == ["missing"]:
        print("\n".join(f"{n}=={v}" for n, v in sorted(missing.items())))
    elif argv[1:] == ["present"]:
        print("\n".join(sorted(present)))
    else:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
