"""Where the time goes (issue 30, item 6): a model's node time per operator group and per op type at batch 1 and
batch 32, on real validation sentences served as `lib.predict` serves them (length-sorted batches, the serving
settings the model ships with), and the GEMM group's rate against the runtime's INT8 matmul peak (lib.measure.roofline).

A collector runs one runtime and returns its measured runs' ops as `Op`s plus their wall time: ONNX Runtime's from its
profiling trace (`ort_ops`), OpenVINO's from its performance counters (`openvino_ops`, one request's
`get_profiling_info()`); the grouping and the figures are the same for both."""
import bisect
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd

from lib.measure import roofline
from lib.predict import serving
from lib.runtime import onnxrt, openvino as ovrt

BATCH = 32
BATCH_TEXTS = 8  # batch 32 reads this many times the batch-1 sentences (as lib.measure.serving_search does)
WARMUP = 3  # runs per batch size answered first and left out of the profile (first-run allocations, cold caches)
GROUPS = ("GEMM", "attention", "quantize/dequantize", "layer norm", "other")
# Op type -> group, ONNX Runtime's names and OpenVINO's CPU plugin's. By op type, not by role: an unfused graph's
# attention matmuls count as GEMM and its Softmax as attention. Embedding: EmbedLayerNormalization (lookups fused
# with their norm) is layer norm; unfused lookups (Gather) are other, their LayerNormalization layer norm.
OP_GROUPS = {
    **dict.fromkeys(("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "MatMulIntegerToFloat",
                     "DynamicQuantizeMatMul", "QGemm", "QLinearMatMul", "MatMulNBits", "FullyConnected"), "GEMM"),
    **dict.fromkeys(("Attention", "QAttention", "MultiHeadAttention", "Softmax", "ScaledDotProductAttention",
                     "SDPA"), "attention"),
    **dict.fromkeys(("DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "FakeQuantize"),
                    "quantize/dequantize"),
    **dict.fromkeys(("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization",
                     "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "MVN"), "layer norm"),
}
# Ops whose first input is the activation A[..., K] and whose output is [..., N]: MACs = size(output) x K.
A_TIMES_B = {op for op, group in OP_GROUPS.items() if group == "GEMM"} - {"FullyConnected"}


class Op(NamedTuple):
    """One operator call of a measured run: its type, its time and, where the runtime says its shapes, its MACs."""
    op_type: str
    us: float
    macs: float | None = None


def group_of(op_type: str) -> str:
    """The group an op type's time counts in; an op type not named in OP_GROUPS is "other"."""
    return OP_GROUPS.get(op_type, "other")


def _dims(shape: dict) -> list[int]:
    """An ORT trace's {dtype: dims} as dims."""
    return next(iter(shape.values()), [])


def macs_of(op_type: str, args: dict) -> float | None:
    """Multiply-accumulates an A x B op ran (padding included), from a trace event's input and output shapes."""
    if op_type not in A_TIMES_B:
        return None
    try:
        k = _dims(args["input_type_shape"][0])[-1]
        out = 1
        for d in _dims(args["output_type_shape"][0]):
            out *= d
    except (KeyError, IndexError, TypeError):
        return None
    return float(out * k)


def ort_ops(events: list, skip: int) -> tuple[list[Op], float, int]:
    """(ops, wall us, runs) of an ORT profiling trace, its first `skip` runs (warm-up) left out: a node counts in
    the run whose model_run span holds its start; wall is the measured runs' model_run time."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = runs[skip:]
    starts = [start for start, _ in kept]
    ops = []
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue  # fence events time no kernel
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i >= 0 and e["ts"] <= kept[i][1]:
            op_type = e["args"]["op_name"]
            ops.append(Op(op_type, float(e["dur"]), macs_of(op_type, e["args"])))
    return ops, float(sum(end - start for start, end in kept)), len(kept)


def openvino_ops(infos) -> list[Op]:
    """Ops of one OpenVINO request's get_profiling_info() (node_type, real_time, status); skipped nodes left out."""
    return [Op(i.node_type, i.real_time.total_seconds() * 1e6) for i in infos if str(i.status).endswith("EXECUTED")]


def batches(model: serving.Model, texts: list[str], batch_size: int) -> list[dict]:
    """The padded inputs lib.predict feeds the model for `texts`: normalized, tokenized, length-sorted batches."""
    return [inputs for _, inputs in serving.sorted_batches(serving.encode(model, texts), batch_size, model.pad_id)]


def collect_ort(path: Path, settings: onnxrt.Settings, feeds: list[dict]) -> tuple[list[Op], float, int]:
    """Run WARMUP feeds, then every feed, in one profiled ORT session with `settings`; the trace is read and then
    removed with its temporary folder (it is no output of the run)."""
    warm = [feeds[i % len(feeds)] for i in range(WARMUP)]
    with tempfile.TemporaryDirectory(prefix="fincompress-profile-") as tmp:
        sess = onnxrt.session(onnxrt.model_file(path), settings=settings, profile_prefix=str(Path(tmp) / "ort"))
        run = onnxrt.predictor(sess)
        for feed in warm + feeds:
            run(feed)
        events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
    return ort_ops(events, skip=len(warm))


def summarize(ops: list[Op], wall_us: float, sentences: int, peak: dict | None) -> dict:
    """Per group and per op type: µs, share of node time and of wall time, ms per sentence; the GEMM group's
    GOP/s (2 ops per MAC) and its share of the INT8 and FP32 peak (None without a peak or MACs)."""
    df = pd.DataFrame(ops, columns=list(Op._fields))
    df["group"] = df["op_type"].map(group_of)
    nodes = float(df["us"].sum())

    def figures(us: float) -> dict:
        return {"us": us, "share": us / nodes if nodes else 0.0, "share_of_wall": us / wall_us if wall_us else 0.0,
                "ms_per_sentence": us / 1000 / sentences}
    by_group = df.groupby("group")["us"].sum()
    by_op = df.groupby(["group", "op_type"])["us"].agg(["sum", "count"]).sort_values("sum", ascending=False)
    gemm = df[df["group"] == "GEMM"]
    counted = len(gemm) and gemm["macs"].notna().all() and gemm["us"].sum() > 0
    seconds, macs = gemm["us"].sum() / 1e6, float(gemm["macs"].sum()) if counted else 0.0
    return {"sentences": sentences, "wall_ms": wall_us / 1000, "node_ms": nodes / 1000,
            "node_share_of_wall": nodes / wall_us if wall_us else 0.0,
            "groups": {g: figures(float(by_group.get(g, 0.0))) for g in GROUPS},
            "ops": [{"op_type": op, "group": g, "calls": int(n), **figures(float(us))}
                    for (g, op), (us, n) in by_op.iterrows()],
            "gemm_gops": 2 * macs / seconds / 1e9 if counted else None,
            **{f"gemm_share_{kind}_peak": roofline.share_of_peak(macs, 1 / seconds, peak[kind]["gops"])
               if counted and peak else None for kind in ("int8", "fp32")}}


def collect_openvino(compiled, feeds: list[dict]) -> tuple[list[Op], float, int]:
    """OpenVINO's collector: `compiled`, an ov.CompiledModel compiled with {"PERF_COUNT": True}, answers WARMUP
    feeds, then every feed; each measured request's performance counters, and its wall time around infer()."""
    request, names = compiled.create_infer_request(), [i.get_any_name() for i in compiled.inputs]
    ops, wall = [], 0.0
    for i, feed in enumerate([feeds[k % len(feeds)] for k in range(WARMUP)] + feeds):
        start = time.perf_counter()
        request.infer({n: feed[n] for n in names})
        if i >= WARMUP:
            wall += (time.perf_counter() - start) * 1e6
            ops += openvino_ops(request.get_profiling_info())
    return ops, wall, len(feeds)


def profile_batches(model: serving.Model, collect: Callable, texts: list[str], n: int, peak: dict | None) -> dict:
    """{"batch_1": figures, "batch_32": figures}: the first n texts one at a time, the first BATCH_TEXTS * n at
    batch 32, fed as lib.predict feeds them to `collect(feeds) -> (ops, wall us, runs)` (any runtime's collector)."""
    serving.set_truncation(model.tokenizer, model.max_length)
    out = {}
    for size, chunk in ((1, texts[:n]), (BATCH, texts[:BATCH_TEXTS * n])):
        ops, wall, runs = collect(batches(model, chunk, size))
        out[f"batch_{size}"] = {"runs": runs, **summarize(ops, wall, len(chunk), peak)}
    return out


def run(path, texts: list[str], settings: onnxrt.Settings, n: int, peak: dict | None, name: str = "") -> dict:
    """The profile stage 05 reports of the ONNX model at `path` (called `name`, else its folder's name) under ONNX
    Runtime with `settings`."""
    path = Path(path)
    return {"variant": name or path.name, "runtime": "onnxruntime", "settings": settings._asdict(),
            "batches": profile_batches(serving.load(path, settings=settings), partial(collect_ort, path, settings),
                                       texts, n, peak)}


def run_openvino(path, texts: list[str], threads: int, n: int, peak: dict | None, name: str = "") -> dict:
    """The same profile of the OpenVINO model at `path`, compiled with the settings it ships with (its precision) on
    `threads` threads, from OpenVINO's performance counters."""
    path = Path(path)
    settings = ovrt.settings_of(path)._replace(threads=threads)
    compiled = ovrt.compiled(ovrt.model_file(path), settings, perf_count=True)
    return {"variant": name or path.name, "runtime": "openvino", "settings": settings._asdict(),
            "batches": profile_batches(serving.load(path, settings=settings), partial(collect_openvino, compiled),
                                       texts, n, peak)}


def of_variant(variant, root: Path, texts: list[str], n: int, settings: onnxrt.Settings, peak: dict | None) -> dict | None:
    """run() (ONNX Runtime) or run_openvino() on a Variant of the run at `root`; None with n = 0 or another format."""
    if not n or variant.format not in ("onnx", "openvino"):
        return None
    if variant.format == "openvino":
        return run_openvino(variant.location(root), texts, settings.threads, n, peak, variant.name)
    return run(variant.location(root), texts, settings, n, peak, variant.name)


def why_none(n: int, name: str) -> str:
    """Why of_variant gave no profile, for the report."""
    return "profile_n = 0" if not n else f"`{name}` runs on neither ONNX Runtime nor OpenVINO: no collector reads it"


def _pct(share) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}"


def table(record: dict) -> pd.DataFrame:
    """The report's table: per group its share of node time and ms per sentence at each batch size, and the GEMM
    group's share of the INT8 peak; last, all nodes together."""
    by = record["batches"]
    rows = []
    for group in (*GROUPS, "all nodes"):
        row = {"group": group}
        for key, b in by.items():
            size = key.split("_")[1]
            figures = b["groups"].get(group, {"share": 1.0, "ms_per_sentence": b["node_ms"] / b["sentences"]})
            row[f"% of node time (batch {size})"] = _pct(figures["share"])
            row[f"ms per sentence (batch {size})"] = round(figures["ms_per_sentence"], 4)
        for key, b in by.items():
            row[f"% of INT8 peak (batch {key.split('_')[1]})"] = _pct(b["gemm_share_int8_peak"]) if group == "GEMM" else ""
        rows.append(row)
    return pd.DataFrame(rows)


def top_ops(b: dict, k: int = 3) -> str:
    return ", ".join(f"{o['op_type']} {100 * o['share']:.0f}%" for o in b["ops"][:k])


def batch_text(size: str, b: dict) -> str:
    """One batch size's sentence for summary(): the two largest groups (and GEMM), the nodes' share of the wall
    time, the GEMM group's rate against the peak."""
    groups = b["groups"]
    first = sorted(GROUPS, key=lambda g: -groups[g]["share"])[:2]
    gemm = "" if "GEMM" in first else f"GEMM {_pct(groups['GEMM']['share'])}%; "
    rate = "" if b["gemm_gops"] is None else (
        f"; the GEMM kernels ran at {b['gemm_gops']:.0f} GOP/s (MACs as executed, padding included)"
        + ("" if b["gemm_share_int8_peak"] is None else f", {_pct(b['gemm_share_int8_peak'])}% of the INT8 peak"))
    return (f"At batch {size} ({b['sentences']} sentences, {b['runs']} run{'s' if b['runs'] != 1 else ''}), {first[0]} takes "
            f"{_pct(groups[first[0]]['share'])}% of node time and {first[1]} {_pct(groups[first[1]]['share'])}% "
            f"({gemm}top op types: {top_ops(b)}); the nodes are {_pct(b['node_share_of_wall'])}% of the run's wall "
            f"time{rate}.")


def summary(record: dict | None, reason: str) -> str:
    """One paragraph reading the profile at each batch size; `reason` says why when no profile was taken."""
    if record is None:
        return f"No per-operator profile ({reason})."
    parts = [batch_text(key.split("_")[1], b) for key, b in record["batches"].items()]
    settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in record["settings"].items())
    return (f"`{record['variant']}` under {record['runtime']} ({settings}), profiled on validation "
            "sentences as `lib.predict` feeds them (warm-up runs left out; profiling adds a little time per node, so "
            "read shares, not absolute ms). " + " ".join(parts) + " A fused attention op (QAttention, Attention) "
            "holds its QKV projection, so GEMM is then the other projections, the FFN and the head. What is not "
            "GEMM (attention, quantizing activations, norms, the glue ops) is time a faster matmul kernel cannot "
            "win back.")


def text(record: dict) -> str:
    """The profile for a terminal: the group table, then each batch size's op types."""
    out = [table(record).to_string(index=False)]
    for key, b in record["batches"].items():
        ops = pd.DataFrame(b["ops"])[["op_type", "group", "calls", "share", "ms_per_sentence"]]
        ops["share"] = (100 * ops["share"]).round(1)
        out += ["", f"{key.replace('_', ' ')}: {b['sentences']} sentences, nodes {_pct(b['node_share_of_wall'])}% "
                    "of wall time", ops.rename(columns={"share": "% of node time"}).to_string(index=False)]
    return "\n".join(out)
