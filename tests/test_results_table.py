"""scripts/results_table.py: README's results table printed from a run's stage-05 JSON, never typed by hand."""
import json
import subprocess
import sys

from tests.conftest import REPO


def script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_table_from_the_smoke_run(smoke_run, tmp_path):
    proc = script(smoke_run)
    assert proc.returncode == 0, proc.stderr
    variants = json.loads((smoke_run / "results" / "benchmark.json").read_text())["variants"]
    shipped = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())["headline"]["recommended"]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| variant | val macro-F1 | test macro-F1 (95% CI) | test Δ vs teacher")
    ood_at = next((i for i, l in enumerate(lines) if l.startswith("| variant | OOD-val")), len(lines))
    rows = [l for l in lines[:ood_at] if l.startswith("| `") or l.startswith("| **")]
    assert len(rows) == len(variants) and f"**`{shipped}`** (shipped)" in proc.stdout
    assert "| +0.00 (+0.00 to +0.00) | 1.000; - | 1.00 | reference |" in rows[0]  # the teacher against itself
    assert any("variants are indistinguishable from the teacher" in l for l in lines)
    flips = [k.removesuffix("_batch_flips") for k in variants[0] if k.endswith("_batch_flips")]
    assert flips == ["val", "test", "ood_val"]  # stage 05's default batch_flip_sets: one column, the counts per set
    assert lines[0].endswith(" | batch flips (val / test / ood_val; - outside the F1 budget, not counted) |")
    assert lines[1].count("---") == 12
    cell = lambda x: "-" if x is None else str(x)  # a variant outside the F1 budget: flips not counted (null)
    assert all(r.endswith(f" | {' / '.join(cell(v[f'{s}_batch_flips']) for s in flips)} |") for r, v in zip(rows, variants))
    assert variants[0]["val_batch_flips"] is not None  # the teacher's are always counted
    ref_at = next(i for i, l in enumerate(lines) if l.startswith("| model | what it is |"))
    if "ood_test_macro_f1" in variants[0]:  # the smoke run scores the tweets when the data folder has them
        ood = lines[ood_at:ref_at]
        assert len([l for l in ood if l.startswith("| `") or l.startswith("| **")]) == len(variants)
        assert "| +0.00 (+0.00 to +0.00) | 1.000 | 1.000 |" in ood[2]  # the teacher keeps all of its own F1
    # The smoke run measures one reference row (ort_optimized_int8): the shipped model first, then it, with the
    # ratios the goals read.
    stage = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    refs, ref_rows = stage["metrics"]["references"], lines[ref_at + 2:]
    assert [r["name"] for r in refs] == ["teacher_ort_optimized_int8"] and len(ref_rows) == 1 + len(refs)
    assert ref_rows[0].startswith(f"| **`{shipped}`** (shipped) | this study's pick | ")
    assert ref_rows[1].startswith("| `teacher_ort_optimized_int8` | ") and f"| {refs[0]['val_macro_f1']:.3f} (" in ref_rows[1]
    b1 = stage["headline"]["e2e faster than the fastest reference row, batch 1 (x)"]
    assert f"is {b1:.2f}x faster end to end than the fastest at batch 1" in lines[ref_at - 2]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results_table.py: begin -->\nold\n<!-- results_table.py: end -->\noutro\n")
    assert script(smoke_run, "--readme", readme).returncode == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end -->\noutro\n") and rows[0] in text
    readme.write_text("no markers\n")
    proc = script(smoke_run, "--readme", readme)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and readme.read_text() == "no markers\n"
