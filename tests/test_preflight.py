"""lib/run/preflight.py in this process: each check's one line, and what it lets through (the subprocess side, exit 2 and
nothing written, is in test_faults.py and test_run_all.py)."""
import os
import re
import shutil
from types import SimpleNamespace

import pytest

from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir
from lib.core.model_source import PACKAGED_TEACHER
from lib.data import corpus, ood
from lib.run import preflight


def test_out_dir_must_be_a_folder_we_can_create_or_write(tmp_path, monkeypatch):
    preflight.check_out_dir(str(tmp_path / "new" / "deeper"))  # created later: its nearest folder is writable
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file", tmp_path / "file" / "out"):
        with pytest.raises(FinCompressError, match=f"^--out-dir {target}: {tmp_path / 'file'} is a file, not a folder; "
                                                   r"pass a folder \(it is created if missing\)$"):
            preflight.check_out_dir(str(target))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data").mkdir()
    preflight.check_out_dir(str(tmp_path / "out"))  # its folders as run_all writes them
    (tmp_path / "out" / "reports").write_text("a file where a folder goes")
    with pytest.raises(FinCompressError, match=f"^--out-dir {tmp_path / 'out'}: {tmp_path / 'out' / 'reports'} is a "
                                               "file where run_all writes a folder; move it away or pass another"):
        preflight.check_out_dir(str(tmp_path / "out"))


def test_out_dir_needs_write_and_search_permission(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(preflight.os, "access", lambda path, flags: asked.append((path, flags)) or False)
    with pytest.raises(FinCompressError, match=f"^--out-dir {tmp_path / 'x'}: {tmp_path} is not writable; pass a folder "
                                               "you can write to$"):
        preflight.check_out_dir(str(tmp_path / "x"))
    assert asked == [(tmp_path, os.W_OK | os.X_OK)]  # root passes os.access anyway: the flags are what can be checked


def test_hub_cached_needs_the_config_and_one_weights_file(monkeypatch):
    import huggingface_hub
    files = set()
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: f"/cache/{repo}/{name}" if name in files else None)
    assert not preflight.hub_cached("org/model")
    files.add("model.safetensors")
    assert not preflight.hub_cached("org/model")  # weights without a config
    files.add("config.json")
    assert preflight.hub_cached("org/model")
    files.discard("model.safetensors")
    assert not preflight.hub_cached("org/model")  # a config without weights
    files.add("pytorch_model.bin.index.json")
    assert preflight.hub_cached("org/model")


def test_teacher_is_the_packaged_model_a_whole_folder_or_a_reachable_hub_id(tmp_path, monkeypatch, tokenizer):
    from tests.test_faults import tiny_bert
    preflight.check_teacher(PACKAGED_TEACHER)
    with pytest.raises(FinCompressError, match=f"^parameter teacher is empty; pass {re.escape(preflight.TEACHER_CHOICES)}$"):
        preflight.check_teacher("  ")
    with atomic_dir(tmp_path / "t") as tmp:
        tiny_bert().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    preflight.check_teacher(str(tmp_path / "t"))
    weights = tmp_path / "t" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")  # same size: only the hash at load sees it
    with pytest.raises(FinCompressError, match=f"^teacher {weights} is damaged .*; pass an undamaged model folder or "
                                               f"{PACKAGED_TEACHER}$"):
        preflight.check_teacher(str(tmp_path / "t"))
    weights.unlink()
    with pytest.raises(FinCompressError, match=f"^teacher folder {tmp_path / 't'} has no weights \\(model.safetensors or "
                                               "pytorch_model.bin\\); pass a complete save_pretrained folder"):
        preflight.check_teacher(str(tmp_path / "t"))
    monkeypatch.setattr(preflight, "hub_offline", lambda: False)
    preflight.check_teacher("org/online")  # online: stage 01 downloads it
    monkeypatch.setattr(preflight, "hub_offline", lambda: True)
    monkeypatch.setattr(preflight, "hub_cached", lambda name: name == "org/cached")
    preflight.check_teacher("org/cached")
    with pytest.raises(FinCompressError, match=f"^teacher 'org/gone' is a Hub id that is not in the local Hugging Face "
                                               f"cache, and the Hub is offline \\(HF_HUB_OFFLINE\\); pass --teacher "
                                               f"{PACKAGED_TEACHER} or a local folder with its config.json and weights$"):
        preflight.check_teacher("org/gone")


def test_data_check_passes_every_setting_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(corpus, "read_local", lambda *a: calls.append(a) or ([], {}, []))
    monkeypatch.setattr(corpus, "plan_splits", lambda *a: calls.append(a) or (None, {}, [], {}))
    monkeypatch.delenv("FINCOMPRESS_DATA_DIR", raising=False)
    preflight.check_data({"data_dir": str(tmp_path), "agreement": "66Agree", "fiqa_threshold": 0.3,
                          "allow_partial_data": True, "seed": 7, "max_rows": 90})
    assert calls == [(tmp_path, "66Agree", 0.3, True), ([], str(tmp_path), 7, "66Agree", 90)]
    (tmp_path / "f").write_text("x")
    with pytest.raises(FinCompressError, match=f"^--data-dir {tmp_path / 'f'} is not a folder; pass one laid out"):
        preflight.check_data({"data_dir": str(tmp_path / "f")})
    assert len(calls) == 2  # nothing read for the file


def test_data_check_splits_the_data_as_stage_01_will(tmp_path, data_dir):
    """A sample too small to stratify, or a tweets file stage 01 cannot parse or split, stops pre-flight."""
    local = tmp_path / "data"
    shutil.copytree(data_dir, local)
    settings = {"data_dir": str(local), "agreement": "AllAgree", "fiqa_threshold": 0.1, "allow_partial_data": False,
                "seed": 42, "max_rows": 240}
    preflight.check_data(settings)
    with pytest.raises(FinCompressError, match="^parameter max_rows=2: a class has too few sentences for a stratified"):
        preflight.check_data({**settings, "max_rows": 2})
    tweets = local / ood.TWEETS
    lines = tweets.read_text(encoding="utf-8").splitlines(keepends=True)
    tweets.write_text("".join(lines[:4] + ['"a tweet, with", "three", 1\n'] + lines[4:]), encoding="utf-8")
    with pytest.raises(FinCompressError, match=f"^{re.escape(str(tweets))} cannot be read as the tweets CSV .*Parser"):
        preflight.check_data(settings)
    tweets.write_text("".join(lines[:4] + ['"a tweet",7\n'] + lines[4:]), encoding="utf-8")
    with pytest.raises(FinCompressError, match="has label '7' in data row 4; tweet labels are 0, 1 or 2"):
        preflight.check_data(settings)
    tweets.write_text("text,label\n" + "".join(f"tweet {i},{i % 3}\n" for i in range(6)), encoding="utf-8")
    with pytest.raises(FinCompressError, match="a class has too few tweets for a stratified split"):
        preflight.check_data(settings)


def test_plan_check_knows_the_teachers_depth_and_what_a_student_dir_is(tmp_path):
    out = str(tmp_path)
    plan = {"02_distillation": {"out_dir": out, "student_layers": 3},
            "03_quantization": {"out_dir": out, "student_dir": "none"}, "04_pruning": {"out_dir": out, "student_dir": ""}}
    preflight.check_plan(plan, {"num_hidden_layers": 6})
    with pytest.raises(FinCompressError, match="^02_distillation: student_layers=7 but the teacher has 6 layers"):
        preflight.check_plan({"02_distillation": {"out_dir": out, "student_layers": 7}}, {"num_hidden_layers": 6})
    with pytest.raises(FinCompressError, match=r"^03_quantization: student_dir \.\./\.\./etc is not a save_pretrained"):
        preflight.check_plan({"03_quantization": {"out_dir": out, "student_dir": "../../etc"}}, {})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    preflight.check_plan({"04_pruning": {"out_dir": out, "student_dir": "mine"}}, {})  # relative to the out dir


def test_an_empty_flag_is_refused_not_read_as_the_default():
    preflight.check_flags(SimpleNamespace(teacher=None, data_dir="d", out_dir="."))
    for flag in ("teacher", "data_dir", "out_dir"):
        args = SimpleNamespace(**{"teacher": None, "data_dir": None, "out_dir": ".", flag: " "})
        with pytest.raises(FinCompressError, match=f"^--{flag.replace('_', '-')} is empty; pass "):
            preflight.check_flags(args)
