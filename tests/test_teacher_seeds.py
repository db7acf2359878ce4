"""scripts/teacher_seeds.py: the teacher's training-seed spread, with the run's own teacher as the first seed."""
import json
import re
import subprocess
import sys

from tests.conftest import REPO


def script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "teacher_seeds.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=900)


def test_the_runs_teacher_is_the_first_seed_and_another_seed_is_trained(smoke_run):
    proc = script(smoke_run, "--seeds", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    report = json.loads((smoke_run / "reports" / "01_data_teacher.json").read_text())
    seed = report["run_info"]["params"]["seed"]
    first = re.fullmatch(rf"seed {seed} \(the run\): val ([\d.]+), test ([\d.]+), ood_val ([\d.]+)", lines[-5])
    # scored as stage 01 scored it: the report's own figures
    assert first and float(first[1]) == round(report["headline"]["teacher val macro-F1"], 4)
    assert float(first[2]) == round(report["headline"]["teacher test macro-F1"], 4)
    second = re.fullmatch(rf"seed {seed + 1}: val ([\d.]+), test ([\d.]+), ood_val ([\d.]+)", lines[-4])
    assert second, lines
    spread = re.fullmatch(r"val: mean ([\d.]+), sd ([\d.]+), min-max ([\d.]+)-([\d.]+) over 2 seeds", lines[-3])
    vals = sorted([float(first[1]), float(second[1])])
    assert spread and abs(float(spread[1]) - sum(vals) / 2) < 1e-4 and [float(spread[3]), float(spread[4])] == vals
    assert lines[-2].startswith("test: mean ") and lines[-1].startswith("ood_val: mean ")


def test_a_folder_without_a_run_and_one_seed_are_one_line_each(tmp_path):
    for args, words in (((tmp_path,), "has no reports/01_data_teacher.json"), ((tmp_path, "--seeds", "1"), "at least 2")):
        proc = script(*args)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
