"""run_all's pre-flight past the parameter values: the out dir can be made, the teacher can be loaded, the data is
whole. Each check reads only, and a failure is one line naming the problem and what to pass instead."""
import os
from pathlib import Path

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.files import REPO_ROOT, stage_paths, student_folder
from lib.core.model_source import FINBERT, PACKAGED_TEACHER, resolve_model_source
from lib.data import corpus, ood
from lib.techniques.distill import resolve_student_layers

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TEACHER_CHOICES = f"{PACKAGED_TEACHER}, a local model folder (config.json and weights) or a Hub id such as {FINBERT}"


def check_out_dir(out_dir: str) -> None:
    """out_dir is a folder we can write, or one we can create: no file in its way, its nearest existing folder writable."""
    path = Path(out_dir).expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise FinCompressError(f"--out-dir {out_dir}: {existing} is a file, not a folder; pass a folder "
                               "(it is created if missing)")
    if existing == path:
        clash = [str(p) for p in stage_paths(path).values() if p.exists() and not p.is_dir()]
        if clash:
            raise FinCompressError(f"--out-dir {out_dir}: {clash[0]} is a file where run_all writes a folder; "
                                   "move it away or pass another --out-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FinCompressError(f"--out-dir {out_dir}: {existing} is not writable; pass a folder you can write to")


def hub_offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def hub_cached(repo_id: str) -> bool:
    """config.json and weights of a Hub model are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name):
        return isinstance(try_to_load_from_cache(repo_id, name), str)
    return cached("config.json") and any(cached(w) for w in WEIGHTS)


def check_teacher(name: str) -> None:
    """The teacher stage 01 will fine-tune resolves: the packaged model, a complete local folder, or a Hub id that
    is cached or can be fetched (online; its config is then read by params.model_config)."""
    if not name.strip():
        raise FinCompressError(f"parameter teacher is empty; pass {TEACHER_CHOICES}")
    source = Path(resolve_model_source(name))  # a missing local path or a folder without config.json stops here
    if source.is_dir():
        if not any((source / w).is_file() for w in WEIGHTS):
            raise FinCompressError(f"teacher folder {source} has no weights ({' or '.join(WEIGHTS[::2])}); pass a "
                                   f"complete save_pretrained folder or {PACKAGED_TEACHER}")
        found = manifest.problem(source, manifest.HASH_AT_LOAD)
        if found:
            raise FinCompressError(f"teacher {found}; pass an undamaged model folder or {PACKAGED_TEACHER}")
    elif hub_offline() and not hub_cached(name):
        raise FinCompressError(f"teacher {name!r} is a Hub id that is not in the local Hugging Face cache, and the Hub "
                               f"is offline (HF_HUB_OFFLINE); pass --teacher {PACKAGED_TEACHER} or a local folder "
                               "with its config.json and weights")


def check_data(params: dict) -> None:
    """Stage 01's raw data: every file its agreement level and FiQA need, each with the lines it should have."""
    data_dir = params["data_dir"] or os.environ.get("FINCOMPRESS_DATA_DIR")
    if data_dir:
        if not Path(data_dir).is_dir():
            raise FinCompressError(f"--data-dir {data_dir} is not a folder; pass one laid out like ../shared/data")
        rows, _, _ = corpus.read_local(Path(data_dir), params["agreement"], params["fiqa_threshold"],
                                     params["allow_partial_data"])
        # split as stage 01 will: a sample too small to stratify, or a damaged tweets file, fails here
        seed, max_rows = params["seed"], params["max_rows"]
        transfer = corpus.plan_splits(rows, data_dir, seed, params["agreement"], max_rows)[2]
        if (Path(data_dir) / ood.TWEETS).is_file():
            ood.plan(Path(data_dir) / ood.TWEETS, [r["text"] for r in rows] + transfer, seed, max_rows)
    elif hub_offline():
        raise FinCompressError("no --data-dir (nor FINCOMPRESS_DATA_DIR) and the Hugging Face Hub is offline "
                               "(HF_HUB_OFFLINE); pass --data-dir PATH laid out like ../shared/data")


def check_flags(args) -> None:
    """A flag given as '' means no value: refuse it rather than fall back to the default without a word."""
    advice = {"teacher": TEACHER_CHOICES, "data_dir": "a folder laid out like ../shared/data, or leave the flag out",
              "out_dir": "a folder, or leave the flag out for the default"}
    for name, fix in advice.items():
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            raise FinCompressError(f"--{name.replace('_', '-')} is empty; pass {fix}")


def check_plan(plan: dict, teacher_config: dict) -> None:
    """What the parameter tags cannot say: a student no deeper than the teacher, a student_dir that is a model."""
    layers = teacher_config.get("num_hidden_layers")
    for stage, values in plan.items():
        try:
            if layers and "student_layers" in values:
                resolve_student_layers(layers, values["student_layers"])
            key = str(values.get("student_dir", "")).strip()
            if key and key.lower() != "none":  # found as the stage's kernel will: it runs in the repository root
                student_folder(key, values["out_dir"], REPO_ROOT)
        except FinCompressError as e:
            raise FinCompressError(f"{stage}: {e}") from None
