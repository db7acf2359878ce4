"""Stage 05's answers to "how fast, really": end-to-end columns, the FinBERT-sized yardstick's rows and ratio,
and the share of the CPU's measured matmul peak a variant reaches (lib.measure.roofline)."""
import numpy as np
import pandas as pd

from lib.measure import reference, roofline
from lib.measure.yardstick import LABEL
from lib.ship import decide

NA = "n/a"


def with_finbert_ratio(df: pd.DataFrame, yard: pd.DataFrame | None) -> pd.DataFrame:
    """speedup_vs_finbert_fp32: the yardstick's FP32 PyTorch batch-1 latency (its first row) over each variant's."""
    if yard is not None and len(yard):
        df["speedup_vs_finbert_fp32"] = yard["latency_median_ms"].iloc[0] / df["latency_median_ms"]
    return df


def measure_peak(threads: int, seconds: float) -> dict | None:
    """ORT's INT8 (MatMulInteger) and FP32 (MatMul) peak on `threads` threads, `seconds` per shape; None if 0."""
    if seconds <= 0:
        return None
    return {kind: roofline.peak_gops(kind, threads, seconds=seconds) for kind in ("int8", "fp32")}


def with_peak_share(df: pd.DataFrame, peak: dict | None) -> pd.DataFrame:
    """share_int8_peak_b32 / share_fp32_peak_b32: useful ops per second at batch 32 (model only) over the peak;
    NaN where the variant has no ONNX graph to count MACs from."""
    if peak:
        macs = pd.to_numeric(df["useful_macs_per_sentence"], errors="coerce")
        for kind in ("int8", "fp32"):
            df[f"share_{kind}_peak_b32"] = [roofline.share_of_peak(m, t, peak[kind]["gops"]) if m == m else np.nan
                                           for m, t in zip(macs, df["throughput_b32_per_s"])]
    return df


def cost_columns(out: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The cost table's extra columns: end to end, speed-up vs the FinBERT-sized FP32 row, share of the INT8 peak."""
    out["e2e ms (batch 1)"] = df["e2e_latency_median_ms"]
    out["e2e sentences/s (batch 32)"] = df["e2e_throughput_b32_per_s"]
    if "speedup_vs_finbert_fp32" in df:
        out["faster than FinBERT-sized FP32 (x)"] = df["speedup_vs_finbert_fp32"]
    if "share_int8_peak_b32" in df:
        out["% of INT8 peak (batch 32)"] = [NA if s != s else f"{100 * s:.1f}" for s in df["share_int8_peak_b32"]]
    return out


def cost_table(df: pd.DataFrame, yard: pd.DataFrame | None, refs: pd.DataFrame | None = None) -> pd.DataFrame:
    """ship.cost_table with the columns above, then the reference rows (lib.measure.reference, marked) and the
    yardstick rows (both unnumbered: they are not plotted)."""
    if refs is not None and len(refs):
        out = reference.beside(lambda d: cost_columns(decide.cost_table(d), d), df, refs)
    else:
        out = cost_columns(decide.cost_table(df), df)
    if yard is None or not len(yard):
        return out
    extra = cost_columns(decide.cost_table(yard), yard)
    extra["#"], extra["variant"] = "", [f"{n} ({LABEL})" for n in yard["name"]]
    return pd.concat([out, extra], ignore_index=True).fillna({c: NA for c in out.columns
                                                             if not pd.api.types.is_numeric_dtype(out[c])})


def quality_table(quality: pd.DataFrame, yard: pd.DataFrame | None) -> pd.DataFrame:
    """The quality table with one n/a row per yardstick: random weights have no F1 worth reading."""
    if yard is None or not len(yard):
        return quality
    rows = pd.DataFrame([{c: NA for c in quality.columns} | {"#": "", "variant": f"{n} ({LABEL})"} for n in yard["name"]])
    return pd.concat([quality, rows], ignore_index=True)


def peak_text(rec: pd.Series, peak: dict | None) -> str:
    """One paragraph for the report: the peak measured, the recommended model's MACs and share of it."""
    if not peak:
        return "The CPU's matmul peak was not measured (`peak_seconds = 0`)."
    i8, f32 = peak["int8"], peak["fp32"]
    text = (f"ONNX Runtime's peak on this CPU, {i8['threads']} threads: INT8 {i8['gops']:.0f} GOP/s "
            f"(MatMulInteger, best of {len(i8['per_shape'])} shapes: {i8['shape']}), FP32 {f32['gops']:.0f} GOP/s.")
    macs = rec.get("useful_macs_per_sentence")
    if macs is None or macs != macs:
        return text + f" `{rec['name']}` has no ONNX graph to count useful MACs from."
    return text + (f" `{rec['name']}` needs {macs / 1e6:.1f} M useful multiply-accumulates per validation sentence "
                   f"(at their real token counts); at batch 32 ({rec['throughput_b32_per_s']:.0f} sentences/s, model "
                   f"only) that is {100 * rec['share_int8_peak_b32']:.1f}% of the INT8 peak "
                   f"({100 * rec['share_fp32_peak_b32']:.1f}% of the FP32 peak).")


def summary(rec: pd.Series, yard: pd.DataFrame | None, peak: dict | None) -> str:
    """The verdict's lines on speed as a user meets it: end to end, against FinBERT's shape, against the peak."""
    lines = [f"* End to end (text in, label out, tokenizer included, as `lib.predict` runs it): "
             f"{rec['e2e_latency_median_ms']:.2f} ms per sentence at batch 1, "
             f"{rec['e2e_throughput_b32_per_s']:.0f} sentences/s at batch 32."]
    if yard is not None and len(yard):
        ref = yard.iloc[0]
        lines.append(f"* {rec['speedup_vs_finbert_fp32']:.1f}x faster at batch 1 than `{ref['name']}` "
                     f"({ref['latency_median_ms']:.1f} ms; FP32 PyTorch, {LABEL}), "
                     f"{ref['disk_bytes'] / rec['disk_bytes']:.1f}x smaller.")
    return "\n".join(lines + [f"* {peak_text(rec, peak)}"])
