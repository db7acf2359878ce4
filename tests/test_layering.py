"""What the floor plan (tests/test_floors.py) cannot see from the source alone: the torch-free modules import
without torch in a fresh interpreter, and every name scripts/ takes from lib exists."""
import ast
import subprocess
import sys

from tests.conftest import REPO


def test_variants_and_onnx_inference_import_without_torch():
    code = ("import sys; import lib.core.variants, lib.runtime.onnxrt, lib.core.errors, lib.core.params, lib.core.goals, "
            "lib.core.pipeline, lib.core.files, lib.core.runinfo, lib.predict.serving, lib.predict.command, lib.ship.card, "
            "lib.core.manifest, lib.core.cli, lib.core.model_source; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def dangling(source: str) -> list[str]:
    """Every `from lib.x import name` and `module.name` (a lib module bound by an import) the source uses that
    lib does not define: what breaks when a refactor moves a function that only a script or a GPU check calls."""
    import importlib
    tree, bound, missing = ast.parse(source), {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lib":
            for a in node.names:
                try:  # `from lib.measure import bench` names a submodule, `from lib.measure.bench import x` an attribute
                    bound[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                except ModuleNotFoundError:
                    if not hasattr(importlib.import_module(node.module), a.name):
                        missing.append(f"{node.module}.{a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            if not hasattr(bound[node.value.id], node.attr):
                missing.append(f"{bound[node.value.id].__name__}.{node.attr}")
    return missing


def test_code_uses_only_names_lib_defines():
    """scripts/ is not run by the suite (GPU check, benchmarks), and a moved name used only on a rare path of lib/, a
    notebook or a test fails late: every `module.name` and `from lib.x import name` is checked here instead."""
    files = [*(REPO / "scripts").glob("*.py"), *(REPO / "lib").rglob("*.py"), *(REPO / "notebooks_src").glob("*.py"),
             *(REPO / "tests").rglob("*.py"), REPO / "run_all.py"]
    found = {str(p.relative_to(REPO)): dangling(p.read_text()) for p in sorted(files)}
    assert {name: m for name, m in found.items() if m} == {}
    assert dangling("from lib.modeling import losses\nlosses.no_such_loss\nfrom lib.report.plots import no_such") == [
        "lib.report.plots.no_such", "lib.modeling.losses.no_such_loss"]
