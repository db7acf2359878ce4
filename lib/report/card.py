"""The verdict card a page opens with: the study's answer (index, stage 05) or one stage's (its own page)."""
import html
import json
import re
from pathlib import Path

import mistune

from lib.core.model_source import describe_teacher
from lib.core.pipeline import BENCHMARK, NAMES, SOURCE
from lib.core.stats import delta_cell
from lib.core.variants import RUNTIMES

GOAL_LINE = re.compile(r"^\s*[*-] \*\*(NOT )?MET\*\*")
MARKDOWN = mistune.create_markdown(escape=True)  # a verdict is text: any markup in it shows as typed
CARD_CSS = """.card{border:2px solid #1f4e8c;border-radius:6px;padding:.7em 1em;margin:.8em 0 1.2em;background:#f7faff;
font-family:system-ui,sans-serif;max-width:84em;box-sizing:border-box}
.card h2{margin:.1em 0 .4em;font-size:1.3em;overflow-wrap:anywhere} .card .figs{display:flex;flex-wrap:wrap;gap:.5em 1.6em;margin:.4em 0}
.card .fig{min-width:9em;flex:1 1 9em} .card .fig b{display:block;font-size:1.25em} .card .fig span{font-size:.85em;color:#444}
.card ul.goals{list-style:none;padding-left:0;margin:.4em 0} .card li.goal{margin:.15em 0;overflow-wrap:anywhere}
.card .note{font-size:.85em;color:#444;margin:.3em 0} .card code{overflow-wrap:anywhere}
.badge{display:inline-block;min-width:5.6em;text-align:center;font-weight:bold;font-size:.85em;border-radius:3px;
padding:.05em .4em;color:#fff} .badge.met{background:#17692c} .badge.missed{background:#b3261e}"""


def badge(check: dict, stage: str, mark: str = "") -> str:
    """One goal as a MET / NOT MET badge, its subject, its wording and what it read (`mark`: a footnote sign)."""
    reads = check.get("reads") or f"{check['value']:.4g}"
    # stage too: 04's and 05's goals can share a name and a subject (the shipped model may be a pruned level)
    return (f"<li class='goal' data-stage='{stage}' data-goal='{html.escape(check['goal'])}' "
            f"data-subject='{html.escape(check['subject'])}'>"
            f"<span class='badge {'met' if check['met'] else 'missed'}'>{'MET' if check['met'] else 'NOT MET'}</span> "
            f"{html.escape(check['subject'])}: {html.escape(check['text'])} <b>({html.escape(reads)})</b>{mark}</li>")


def _fig(label: str, value: str, detail: str) -> str:
    return f"<div class='fig'>{html.escape(label)}<b>{html.escape(value)}</b><span>{html.escape(detail)}</span></div>"


def machine(result: dict) -> str:
    """The CPU and threads of the run that measured a stage's speeds."""
    hw = result.get("run_info", {}).get("hardware", {})
    return f"{hw.get('cpu', '?')}, {hw.get('torch_threads', hw.get('cpu_count', '?'))} threads"


def run_line(result: dict) -> str:
    """Commit, seed, CPU with its SIMD flags, and the versions that matter for speed, in one line."""
    info = result.get("run_info")
    if not info:
        return ""
    hw, v = info.get("hardware", {}), info.get("versions", {})
    flags = " ".join(hw.get("cpu_flags", [])) or "flags not recorded"
    versions = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "onnxruntime", "openvino") if k in v)
    return (f"<p class='note run'>Run: commit <code>{html.escape(info.get('git_commit', '?'))}</code> · seed "
            f"{info.get('seed', '?')} · {html.escape(hw.get('gpu') or machine(result))} ({html.escape(flags)}) · "
            f"{html.escape(versions)}</p>")


def teacher_note(results: dict) -> str:
    """What the teacher is, and what the FinBERT-sized speed-up is measured against."""
    teacher = results.get(SOURCE, {}).get("run_info", {}).get("params", {}).get("teacher")
    text = f"Teacher: {describe_teacher(teacher)}." if teacher else "Teacher: stage 01 has not run."
    return (f"<p class='note'>{html.escape(text)} Every speed-up is against the teacher as FP32 PyTorch on this "
            f"machine; the FinBERT-sized yardstick of stage 05 is an untrained bert-base-shaped model, timed for "
            f"shape only.</p>")


def study_card(results: dict) -> str:
    """The shipped model: lineage and runtime, val and test macro-F1 with the paired interval and its word, speed
    and size with the machine, out-of-domain retention, the deployment goals, and what the teacher is."""
    bench = results.get(BENCHMARK, {})
    rec, shipped = bench.get("metrics", {}).get("recommended"), bench.get("metrics", {}).get("shipped", {})
    if not rec:
        return ("<section class='card' id='verdict'><h2>No model shipped yet</h2><p>Stage 05 has not run: "
                f"<code>make run</code> runs every stage.</p>{teacher_note(results)}</section>")
    chain = " → ".join(shipped.get("lineage", [rec["name"]]))
    runtime = RUNTIMES.get(rec.get("format"), rec.get("format", "?"))
    reading = rec.get("test_reading", "")
    seeds = rec.get("seeds_read", 1)  # the F1 goals read the mean over its seeds' models (lib.ship.seed_mean)
    figs = [_fig("validation macro-F1 (decides)", f"{rec['val_macro_f1']:.3f}",
                 f"{rec['val_delta_pts']:+.2f} points vs the teacher" + (
                     f"; {rec['seed_val_delta_pts']:+.2f} on the mean of its {seeds:.0f} training seeds (what the goal "
                     "reads)" if seeds > 1 else "")),
            _fig("test macro-F1 (reported)", f"{rec['test_macro_f1']:.3f}",
                 f"Δ {delta_cell(rec['test_delta_pts'], rec['test_delta_ci_low'], rec['test_delta_ci_high'])} points"
                 + (f": {reading}" if reading else "")),
            _fig("faster at batch 1", f"{rec['speedup_vs_teacher']:.1f}x",
                 f"{rec['latency_median_ms']:.2f} ms median ({machine(bench)})"),
            _fig("smaller on disk", f"{rec['size_ratio_vs_teacher']:.1f}x", f"{rec['disk_bytes'] / 1e6:.1f} MB")]
    if "ood_val_retention" in rec:
        figs.append(_fig("out-of-domain val kept", f"{rec['ood_val_retention']:.1%}", "of the teacher's macro-F1 (tweets)"))
    goals = "".join(badge(c, BENCHMARK) for c in bench.get("goals", []))
    return (f"<section class='card' id='verdict'><h2>Shipped: <code>{html.escape(rec['name'])}</code></h2>"
            f"<p class='note'>{html.escape(chain)} · served by {html.escape(runtime)} ({html.escape(rec.get('precision', '?'))})"
            f"</p><div class='figs'>{''.join(figs)}</div><ul class='goals'>{goals}</ul>{teacher_note(results)}"
            f"{run_line(bench)}</section>")


def stage_card(stage: str, result: dict, error: str = "") -> str:
    """A stage page's first screen: its verdict and goal badges, or why it failed."""
    if error:
        return (f"<section class='card' id='verdict'><h2>{html.escape(stage)} failed</h2>"
                f"<p>{html.escape(error)}</p><p class='note'>Its cells below show where; fix and run "
                f"<code>python run_all.py --only {html.escape(stage)}</code>.</p></section>")
    goals = "".join(badge(c, stage) for c in result.get("goals", []))
    # the verdict's own MET / NOT MET lines say what the badges above it say
    text = "\n".join(line for line in result.get("verdict", "").splitlines() if not GOAL_LINE.match(line))
    verdict = MARKDOWN(text) if text.strip() else "<p>No verdict recorded.</p>"
    return (f"<section class='card' id='verdict'><h2>Verdict</h2><ul class='goals'>{goals}</ul>{verdict}"
            f"<p class='note'>What the study ships: <a href='index.html'>the index</a>.</p>{run_line(result)}</section>")


def read_results(reports_dir: Path) -> dict:
    """Every stage's JSON that is there, by stage."""
    paths = {stage: Path(reports_dir) / f"{stage}.json" for stage in NAMES}
    return {s: json.loads(p.read_text(encoding="utf-8")) for s, p in paths.items() if p.is_file()}


def page_card(reports_dir: Path, stage: str, error: str = "") -> str:
    """The card a stage page opens with: stage 05's is the study's answer, with its full verdict folded below."""
    results = {} if error else read_results(reports_dir)
    if error or stage != BENCHMARK:
        return f"<style>{CARD_CSS}</style>" + stage_card(stage, results.get(stage, {}), error)
    verdict = MARKDOWN(results.get(stage, {}).get("verdict", ""))
    card = study_card(results).removesuffix("</section>")
    return (f"<style>{CARD_CSS}</style>{card}<details><summary>Why this model: the full verdict</summary>{verdict}"
            f"</details></section>")
