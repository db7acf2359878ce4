"""lib.core.files, lib.core.runinfo, lib.modeling.device: atomic saves and writes, JSON of numpy values, paths, run
metadata, the seed and device, the CLI runner."""
import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.core import cli, files, manifest, runinfo
from lib.core.errors import FinCompressError
from lib.modeling import device, distributed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_dir_swaps_in_the_new_folder_shared_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setenv(manifest.WRITES_ENV, str(tmp_path / "writes"))
    final = tmp_path / "deep" / "ckpt"
    with files.atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".ckpt.tmp-") and mode(tmp) == 0o755
        (tmp / "w.bin").write_bytes(b"old")
    (tmp_path / "deep" / ".ckpt.tmp-killed").mkdir()  # left by a process killed mid-save
    with files.atomic_dir(final) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"new")
        os.chmod(tmp / "sub" / "w.bin", 0o600)  # as safetensors writes it
        assert not (tmp_path / "deep" / ".ckpt.tmp-killed").exists()
    assert (final / "sub" / "w.bin").read_bytes() == b"new" and not (final / "w.bin").exists()
    assert mode(final / "sub" / "w.bin") == 0o644 and mode(final / "sub") == 0o755
    assert sorted(p.name for p in final.parent.iterdir()) == ["ckpt"]  # no temp, no .old
    assert (tmp_path / "writes").read_text() == f"{final}\n{final}\n"


def test_atomic_dir_failure_leaves_no_temp_and_the_old_folder(tmp_path):
    final = tmp_path / "ckpt"
    with files.atomic_dir(final) as tmp:
        (tmp / "w.bin").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_dir(final) as tmp:
            (tmp / "w.bin").write_bytes(b"ne")
            raise KeyboardInterrupt
    assert (final / "w.bin").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_write_text_atomic_is_published_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "new" / "deeper" / "r.json"
    real, moved = os.replace, []
    monkeypatch.setattr(files.os, "replace", lambda src, dst: moved.append(Path(src)) or real(src, dst))
    files.write_text_atomic(path, "é\n")
    assert path.read_bytes() == "é\n".encode() and mode(path) == 0o644
    # written next to it under a dot name, so the rename is atomic and a reader never lists the temp file
    assert moved[0].parent == path.parent and moved[0].name.startswith(".r.json.")
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        files.write_text_atomic(path, "other")
    assert path.read_text() == "é\n" and [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_json_takes_numpy_values_and_paths(tmp_path):
    files.write_json(tmp_path / "m.json", {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(2), "p": Path("/x")})
    text = (tmp_path / "m.json").read_text()
    assert text.endswith("}\n") and '\n  "i": 3' in text
    assert files.read_json(tmp_path / "m.json") == {"i": 3, "f": 0.5, "a": [0, 1], "p": "/x"}
    with pytest.raises(TypeError, match="not JSON serialisable: <class 'object'>"):
        files.write_json(tmp_path / "bad.json", {"o": object()})
    with pytest.raises(FinCompressError, match=f"^stage 03 report file {tmp_path / 'none.json'} does not exist; run"):
        files.read_json(tmp_path / "none.json", "stage 03 report")
    with pytest.raises(FinCompressError, match="^metrics file"):
        files.read_json(tmp_path / "none.json")


def test_paths_relative_to_the_out_dir(tmp_path):
    assert files.relative_path(tmp_path / "checkpoints" / "t", tmp_path) == "checkpoints/t"
    assert files.relative_path("/elsewhere/t", tmp_path) == "/elsewhere/t"
    paths = files.stage_paths(tmp_path)
    assert paths == {"root": tmp_path, "data": tmp_path / "data", "checkpoints": tmp_path / "checkpoints",
                     "logs": tmp_path / "logs", "reports": tmp_path / "reports"}


def test_seed_repeats_every_generator():
    draws = []
    for _ in range(2):
        device.set_seed(5)
        draws.append((__import__("random").random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_plain_run_is_one_process_on_the_cpu(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.dist_env() == (0, 0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.dist_env() == (3, 1, 4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with distributed.data_parallel(torch.device("cpu")) as joined:
        assert joined is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FinCompressError, match="^--gpu was given but no CUDA device is visible; drop --gpu"):
        device.resolve_device(True)


def test_git_commit_marks_changed_code_but_not_reports(tmp_path, monkeypatch):
    repo = tmp_path / "r"
    (repo / "reports").mkdir(parents=True)
    for cmd in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    (repo / "a.py").write_text("1")
    (repo / "reports" / "r.json").write_text("1")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(runinfo, "REPO_ROOT", repo)
    (repo / "reports" / "r.json").write_text("2")
    (repo / "untracked.py").write_text("new")  # not part of the commit's code until it is added
    assert runinfo.git_commit() == head
    (repo / "a.py").write_text("2")
    assert runinfo.git_commit() == head + "-dirty"
    monkeypatch.setattr(runinfo, "REPO_ROOT", tmp_path / "missing")
    assert runinfo.git_commit() == "unknown"
    (tmp_path / "plain").mkdir()  # a folder outside any repository: git runs, and answers nothing
    monkeypatch.setattr(runinfo, "REPO_ROOT", tmp_path / "plain")
    assert runinfo.git_commit() == "unknown"


def test_run_info_says_where_and_how(monkeypatch):
    monkeypatch.setattr(device, "git_commit", lambda: "abc1234")
    info = device.run_info(7, torch.device("cpu"), {"lr": 0.1})
    assert (info["seed"], info["device"], info["git_commit"], info["params"]) == (7, "cpu", "abc1234", {"lr": 0.1})
    assert info["versions"]["torch"] == torch.__version__ and "onnxruntime" in info["versions"]
    assert info["hardware"]["cpu_count"] == os.cpu_count() and "gpu" not in info["hardware"]
    assert device.run_info(7, torch.device("cpu"))["params"] == {}
    text = runinfo.format_run_info({**info, "hardware": {**info["hardware"], "cpu": "X", "gpu": "H100"}})
    lines = text.splitlines()
    assert lines[0] == "seed 7 | device cpu | git abc1234" and lines[-1] == "params: lr=0.1"
    flags = " ".join(runinfo.cpu_flags()) or "unknown"
    assert info["hardware"]["cpu_flags"] == runinfo.cpu_flags()
    assert lines[1] == (f"hardware: X ({os.cpu_count()} cores, torch threads {info['hardware']['torch_threads']}; "
                        f"flags {flags}), GPU H100")
    assert lines[2].startswith("versions: python ") and f"torch {torch.__version__}" in lines[2]
    assert len(runinfo.format_run_info({**info, "params": {}}).splitlines()) == 3
    assert runinfo.cpu_name()


def test_run_cli_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run_cli(lambda: 0, "prog")
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        cli.run_cli(lambda: (_ for _ in ()).throw(FinCompressError("bad input")), "prog")
    assert e.value.code == 2 and capsys.readouterr().err == "prog: error: bad input\n"


def test_gpu_device_is_this_ranks_gpu(monkeypatch):
    """No GPU here: CUDA is mocked so the --gpu and torchrun device choice is still checked."""
    picked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    for var in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert device.resolve_device(True) == torch.device("cuda") and picked == []
    assert device.resolve_device(False) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.resolve_device(True) == torch.device("cuda", 1) and picked == [1]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(FinCompressError, match="^LOCAL_RANK 2 but only 2 GPU\\(s\\) visible; launch at most one process "
                                               "per GPU \\(torchrun --nproc_per_node\\)$"):
        device.resolve_device(True)


def test_run_info_names_the_gpu_and_every_package(monkeypatch):
    from importlib import metadata
    import platform
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"H100 as {device}")
    info = device.run_info(1, torch.device("cuda", 0))
    assert info["hardware"]["gpu"] == "H100 as cuda:0" and info["hardware"]["platform"] == platform.platform()
    names = ["torch", "transformers", "datasets", "scikit-learn", "numpy", "onnxruntime", "onnx", "openvino", "nncf",
             "papermill"]
    assert runinfo.package_versions() == {"python": platform.python_version(), **{n: metadata.version(n) for n in names}}
    text = runinfo.format_run_info({**info, "params": {"a": 1, "b": "x"}}).splitlines()
    assert text[2] == "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    assert text[3] == "params: a=1, b='x'"
    plain = runinfo.format_run_info({**info, "hardware": {**info["hardware"], "cpu": "X"}, "params": {}})
    assert plain.splitlines()[1].endswith(", GPU H100 as cuda:0")
    del info["hardware"]["gpu"]
    assert runinfo.format_run_info({**info, "hardware": {**info["hardware"], "cpu": "X"}}).splitlines()[1] == \
        f"hardware: X ({os.cpu_count()} cores, torch threads {info['hardware']['torch_threads']}; flags " \
        f"{' '.join(runinfo.cpu_flags()) or 'unknown'})"


def test_cpu_name_reads_the_first_model_name_else_the_platform(monkeypatch):
    from types import SimpleNamespace
    text = "processor\t: 0\nmodel name\t: Xeon: Gold 6130 @ 2.1GHz \nmodel name\t: other\n"
    monkeypatch.setattr(runinfo, "Path", lambda p: SimpleNamespace(read_text=lambda: text) if p == "/proc/cpuinfo" else None)
    assert runinfo.cpu_name() == "Xeon: Gold 6130 @ 2.1GHz"
    text = "processor\t: 0\n"
    monkeypatch.setattr(runinfo.platform, "processor", lambda: "")
    monkeypatch.setattr(runinfo.platform, "machine", lambda: "x86_64")
    assert runinfo.cpu_name() == "x86_64"
    monkeypatch.setattr(runinfo.platform, "processor", lambda: "i386")
    assert runinfo.cpu_name() == "i386"

    def unreadable():
        raise OSError("no /proc")
    monkeypatch.setattr(runinfo, "Path", lambda p: SimpleNamespace(read_text=unreadable))
    assert runinfo.cpu_name() == "i386"


def test_json_is_strict_nan_and_infinities_become_null(tmp_path):
    files.write_json(tmp_path / "m.json", {"a": float("nan"), "b": [np.float64("inf"), np.float32("-inf"), 1.5],
                                            "c": np.array([np.nan, 2.0]), "d": (np.float64(0.25),)})
    strict = json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
    assert strict == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": [0.25]}
