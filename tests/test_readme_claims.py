"""What the README promises about where data comes from, what ranks > 0 run, and which sentences the trimmed
vocabulary is built from (issue 23's untested claims)."""
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import run_all
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.data import corpus
from lib.run import preflight
from lib.stages import stacking


@pytest.fixture
def reads(monkeypatch) -> list:
    """Every data read as ("local", folder) or ("hub",), without reading anything."""
    seen = []
    monkeypatch.setattr(corpus, "read_local", lambda folder, *a: seen.append(("local", str(folder))) or ([], {}, []))
    monkeypatch.setattr(corpus, "read_hub", lambda *a: seen.append(("hub",)) or ([], {}, []))
    return seen


def test_data_comes_from_data_dir_then_the_environment_then_the_hub(tmp_path, monkeypatch, reads):
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir()
    env.mkdir()
    monkeypatch.setenv("FINCOMPRESS_DATA_DIR", str(env))
    assert corpus.load_rows(str(flag))[-1] == str(flag)
    assert corpus.load_rows(None)[-1] == str(env)
    monkeypatch.delenv("FINCOMPRESS_DATA_DIR")
    assert corpus.load_rows(None)[-1] == "huggingface-hub"
    assert reads == [("local", str(flag)), ("local", str(env)), ("hub",)]


def test_preflight_checks_the_same_source_in_the_same_order(tmp_path, monkeypatch, reads):
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir()
    env.mkdir()
    source = {"agreement": "AllAgree", "fiqa_threshold": 0.1, "allow_partial_data": False, "seed": 42, "max_rows": 0}
    monkeypatch.setattr(corpus, "plan_splits", lambda *a: (None, {}, [], {}))  # splits what read_local read: nothing
    monkeypatch.setenv("FINCOMPRESS_DATA_DIR", str(env))
    preflight.check_data({**source, "data_dir": str(flag)})
    preflight.check_data({**source, "data_dir": ""})
    monkeypatch.delenv("FINCOMPRESS_DATA_DIR")
    monkeypatch.setattr(preflight, "hub_offline", lambda: False)
    preflight.check_data({**source, "data_dir": ""})  # online: the Hub is read by stage 01, not by pre-flight
    assert reads == [("local", str(flag)), ("local", str(env))]
    monkeypatch.setattr(preflight, "hub_offline", lambda: True)
    with pytest.raises(FinCompressError, match=r"^no --data-dir \(nor FINCOMPRESS_DATA_DIR\) and the Hugging Face Hub "
                                               r"is offline \(HF_HUB_OFFLINE\); pass --data-dir PATH"):
        preflight.check_data({**source, "data_dir": ""})
    with pytest.raises(FinCompressError, match=f"^--data-dir {tmp_path / 'none'} is not a folder; pass one"):
        preflight.check_data({**source, "data_dir": str(tmp_path / "none")})


def test_run_all_passes_data_dir_to_stage_01_and_leaves_it_empty_otherwise(tmp_path):
    cell = run_all.parameters_cell("01_data_teacher")
    given = run_all.stage_parameters("01_data_teacher", cell, run_all.parse_args(["--data-dir", str(tmp_path)]))
    assert given["data_dir"] == str(tmp_path.resolve())
    assert run_all.stage_parameters("01_data_teacher", cell, run_all.parse_args([]))["data_dir"] == ""


def test_ranks_above_0_skip_the_benchmark_in_a_scratch_copy(tmp_path, monkeypatch):
    import torch.distributed as dist
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\n")
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(dist, "barrier", lambda: None)
    taken = []

    def broadcast(box, src):  # what rank 0 sends every rank: its records
        assert src == 0
        box[0] = box[0] or ("ok", "rank 0's records")
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    stages = run_all.available_stages()
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        args = SimpleNamespace(out_dir=str(tmp_path))
        ran, records = run_all.join_launcher(args, stages, lambda: taken.append(1) or "rank 0's records")
        assert records == "rank 0's records"
        if rank:
            assert ran == [s for s in stages if s != "05_benchmark"] and len(ran) == len(stages) - 1
            assert Path(args.out_dir) == tmp_path / ".ddp" / "rank1"
            assert (Path(args.out_dir) / "data" / "train.csv").is_file()
        else:
            assert ran == stages and args.out_dir == str(tmp_path)
    assert taken == [1]  # rank 0 alone took the out dir


def test_the_trimmed_vocabulary_sees_train_sentences_and_the_tweet_pool_never_val(tmp_path, monkeypatch):
    splits = {s: pd.DataFrame({"text": [f"{s} sentence {i}" for i in range(3)], "label": [0, 1, 2]})
              for s in ("train", "val", "test")}
    seen = {}

    def build(paths, variants, texts, keep, vocab_texts=None, vocab_frequent=0, static=None, vocab_min_count=1,
              runtimes=(), bf16=False):
        seen.update(texts=texts, vocab_texts=vocab_texts, frequent=vocab_frequent, static=static, min_count=vocab_min_count,
                    runtimes=runtimes)
        return []
    monkeypatch.setattr(stacking, "load_splits", lambda folder: splits)
    monkeypatch.setattr(stacking.ood, "load_tweet_pool", lambda folder: ["$TSLA up http"])
    monkeypatch.setattr(stacking, "build_stacked", build)
    monkeypatch.setattr(stacking.Stage, "upstream_variants", lambda self: [Variant("p", "pruned", "p")])
    stage = stacking.Stage({"out_dir": str(tmp_path), "vocab_frequent": 7, "vocab_min_count": 2})
    stage.gather()
    stage.build()
    assert seen["vocab_texts"] == splits["train"]["text"].tolist() + ["$TSLA up http"]  # val never: it must see the loss
    assert seen["texts"] == splits["val"]["text"].tolist() and seen["frequent"] == 7 and seen["min_count"] == 2
    assert seen["static"]["texts"] == splits["train"]["text"].tolist()  # static INT8 calibrates on training sentences only
    assert seen["runtimes"] == ("onnxruntime", "openvino")  # the notebook's default: every stacked model under both
    stage = stacking.Stage({"out_dir": str(tmp_path), "trim_vocab": False})
    stage.gather()
    stage.build()
    assert seen["vocab_texts"] is None
