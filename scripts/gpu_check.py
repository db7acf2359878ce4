"""The steps of scripts/gpu_check.sh, one per call: python scripts/gpu_check.py env|standin|smoke|train|ddp.

Each step prints `gpu_check: STEP: OK|FAIL <figures>` as its last line and exits 0 only when OK. The shell
script sets the environment: GPU_CHECK_WORK (scratch folder), GPU_CHECK_BUNDLE (.gpu_bundle), HF_HOME (a
private Hugging Face cache) with HF_HUB_OFFLINE=1, GPU_CHECK_DEADLINE (epoch seconds), GPU_CHECK_CPU=1 for
the CPU rehearsal (tiny sizes, no --gpu), FINBERT_DIR for the real FinBERT weights instead of the stand-in.
"""
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from gpu_common import BUNDLE, CPU_MODE, WORK, CheckFailed, device, left_s, run_logged  # noqa: E402
from gpu_check_train import ddp_worker, step_ddp, step_train  # noqa: E402
from lib.core import pipeline  # noqa: E402
from lib.core.model_source import FINBERT  # noqa: E402

FINBERT_REV = "0000000000000000000000000000000000f1b3e7"  # the private cache's fake commit of the stand-in
# FinBERT's head order (its config.json): our labels are negative/neutral/positive, so load_classifier remaps.
FINBERT_ID2LABEL = {0: "positive", 1: "negative", 2: "neutral"}
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128}
NEEDED = ["torch", "transformers", "huggingface_hub", "tokenizers", "safetensors", "onnx", "onnxruntime", "sklearn",
          "pandas", "seaborn", "matplotlib", "psutil", "tqdm", "jinja2", "papermill", "jupytext", "nbconvert",
          "nbformat", "nbclient", "ipykernel"]


def step_env() -> str:
    """Versions, the packages run_all needs, papermill's python3 kernel, nbconvert's templates, the GPU."""
    import importlib
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except Exception as e:  # any import failure is a missing dependency here
            missing.append(f"{name} ({type(e).__name__})")
    if missing:
        raise CheckFailed("cannot import " + ", ".join(missing))
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec("python3")
    if Path(spec.argv[0]).name not in ("python", "python3", Path(sys.executable).name):
        raise CheckFailed(f"papermill's python3 kernel runs {spec.argv[0]}, not this interpreter {sys.executable}")
    import nbformat
    from lib.report.render import render_html
    render_html(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("check")]), WORK / "logs" / "env.html")
    import torch
    import transformers
    where = "CPU rehearsal" if CPU_MODE else f"{torch.cuda.get_device_name(device())}, {torch.cuda.device_count()} GPU(s)"
    return (f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{where}, kernel python3 -> {spec.argv[0]}")


def write_standin(snap: Path) -> str:
    """A randomly initialised FinBERT-shaped classifier and its WordPiece tokenizer, saved into `snap`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    vocab = snap / "vocab.txt"
    shutil.copy(BUNDLE / "vocab.txt", vocab)
    (snap / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer",
                                                            "model_max_length": 512}))
    AutoTokenizer.from_pretrained(snap).save_pretrained(snap)
    dims = TINY if CPU_MODE else BERT_BASE
    config = BertConfig(vocab_size=sum(1 for _ in vocab.open()), max_position_embeddings=512, type_vocab_size=2,
                        id2label=FINBERT_ID2LABEL, label2id={v: k for k, v in FINBERT_ID2LABEL.items()}, **dims)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(snap)
    return f"random stand-in {dims['num_hidden_layers']}x{dims['hidden_size']}"


def step_standin() -> str:
    """Serve the stand-in (or FINBERT_DIR) as ProsusAI/finbert from the private hub cache; check the head remap."""
    import huggingface_hub
    import torch
    from transformers import AutoModelForSequenceClassification
    from lib.modeling.train import load_classifier
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        raise CheckFailed("HF_HUB_OFFLINE is not 1: run this through scripts/gpu_check.sh")
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--ProsusAI--finbert"
    snap = repo / "snapshots" / FINBERT_REV
    shutil.rmtree(repo, ignore_errors=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FINBERT_REV)
    if os.environ.get("FINBERT_DIR"):
        shutil.copytree(os.environ["FINBERT_DIR"], snap, dirs_exist_ok=True)
        what = f"FINBERT_DIR {os.environ['FINBERT_DIR']}"
    else:
        what = write_standin(snap)
    cached = huggingface_hub.try_to_load_from_cache(FINBERT, "config.json")
    if not cached or not str(cached).startswith(str(snap)):
        raise CheckFailed(f"the hub cache does not serve {FINBERT} from {snap} (got {cached})")
    raw = AutoModelForSequenceClassification.from_pretrained(snap).classifier.weight
    old = {int(k): v.lower() for k, v in raw_config(snap)["id2label"].items()}
    model, tok = load_classifier(FINBERT)
    order = [next(i for i, n in old.items() if n == label) for label in ("negative", "neutral", "positive")]
    if not torch.equal(model.classifier.weight, raw[order]) or model.config.id2label[0] != "negative":
        raise CheckFailed(f"head not remapped from {old} to negative/neutral/positive")
    return (f"{what} served as {FINBERT} offline from {repo.parent.parent}; head rows {order} -> negative/neutral/"
            f"positive; {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, vocab {tok.vocab_size}")


def raw_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def stage_times(log: Path) -> str:
    """`01 25s, 02 40s, ...` from run_all's own `=== stage: ok (N s)` lines."""
    done = [line.split()[1].rstrip(":")[:2] + " " + line.rsplit("(", 1)[1].rstrip(")\n").replace(" ", "")
            for line in log.read_text(errors="replace").splitlines() if line.startswith("=== ") and ": ok (" in line]
    return ", ".join(done) or "no stage finished"


def step_smoke() -> str:
    """run_all.py --gpu --smoke through all five stages (CPU rehearsal: no --gpu), the FinBERT teacher offline."""
    out, log = WORK / "smoke", WORK / "logs" / "run_all_smoke.log"
    cmd = [sys.executable, "run_all.py", "--smoke", "--data-dir", str(BUNDLE / "data"), "--out-dir", str(out),
           "--teacher", FINBERT] + ([] if CPU_MODE else ["--gpu"])
    start = time.time()
    rc = run_logged(cmd, log, left_s() - 5)
    took = f"{time.time() - start:.0f} s ({stage_times(log)})"
    if rc == 124:
        raise CheckFailed(f"timed out after {took}; log {log}")
    status_file = out / "reports" / "run_all.json"
    status = json.loads(status_file.read_text())["status"] if status_file.is_file() else {}
    bad = {k: v for k, v in status.items() if not v.startswith("ok")}
    if rc or bad or len(status) != len(pipeline.NAMES):
        raise CheckFailed(f"run_all exit {rc}, {bad or status or 'no status'}; log {log}")
    info = json.loads((out / "reports" / "01_data_teacher.json").read_text())["run_info"]
    if not CPU_MODE and not info["device"].startswith("cuda"):
        raise CheckFailed(f"stage 01 ran on {info['device']}, not CUDA")
    rec = json.loads((out / "reports" / "05_benchmark.json").read_text())["headline"].get("recommended")
    gpu = f" ({info['hardware']['gpu']})" if "gpu" in info["hardware"] else ""
    return f"{len(status)}/{len(pipeline.NAMES)} stages ok in {took}; stage 01 on {info['device']}{gpu}; 05 recommends {rec}"


def main(argv: list[str]) -> int:
    steps = {"env": step_env, "standin": step_standin, "smoke": step_smoke, "train": step_train, "ddp": step_ddp}
    if argv[1:] == ["ddp-worker"]:
        ddp_worker()
        return 0
    if len(argv) != 2 or argv[1] not in steps:
        print(f"usage: gpu_check.py {'|'.join(steps)}", file=sys.stderr)
        return 2
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    try:
        figures, ok = steps[argv[1]](), True
    except CheckFailed as e:
        figures, ok = str(e), False
    except Exception as e:  # an unexpected error is a failed check too, with its own line
        import traceback
        traceback.print_exc()
        figures, ok = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", False
    print(f"gpu_check: {argv[1]}: {'OK' if ok else 'FAIL'} {figures}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
