"""The layering contract, checked on the source: techniques never import stages, stages never import each other,
scripts never reach into a stage; the modules a torch-free predict needs import without torch."""
import ast
import subprocess
import sys

from tests.conftest import REPO

TECHNIQUES = {"lib.distill", "lib.losses", "lib.quantize", "lib.sensitivity", "lib.onnx_export", "lib.onnx_graph",
              "lib.prune", "lib.vocab"}
ORCHESTRATION = {"lib.pipeline", "lib.harness", "lib.ship", "lib.render", "lib.report"}
STAGE_SHARED = {"lib.stages", "lib.stages.base"}  # the package and the base class every stage builds on


def imported(source: str, known: set[str]) -> set[str]:
    """The known modules a source imports, at the top or inside a function (`from lib import x` is lib.x)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
    return found & known


def violations(files: dict[str, str]) -> list[str]:
    """files: module name -> source. Every broken rule, one line each."""
    known = set(files)
    stages = {m for m in known if m.startswith("lib.stages.") and m not in STAGE_SHARED}
    out = []
    for module, source in files.items():
        deps = imported(source, known)
        if module.startswith("lib.stages"):
            out += [f"{module} imports stage {d}" for d in sorted(deps & stages - {module})]
        else:
            out += [f"{module} imports stage code {d}" for d in sorted(deps) if d.startswith("lib.stages")]
        if module in TECHNIQUES:
            out += [f"technique {module} imports orchestration {d}" for d in sorted(deps & ORCHESTRATION)]
    return sorted(out)


def repo_sources() -> dict[str, str]:
    files = {}
    for path in [*(REPO / "lib").rglob("*.py"), *(REPO / "scripts").glob("*.py"), REPO / "run_all.py"]:
        rel = path.relative_to(REPO).with_suffix("")
        files[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path.read_text(encoding="utf-8")
    return files


def test_no_stage_imports_another_and_nothing_reaches_into_stages():
    files = repo_sources()
    assert {"lib.stages.distillation", "lib.stages.benchmark", "lib.distill", "scripts.bench_quantize"} <= set(files)
    assert violations(files) == []


def test_the_checker_catches_each_kind_of_violation():
    files = {"lib.stages": "", "lib.stages.a": "from lib.stages import b\n",
             "lib.stages.b": "def f():\n    import lib.stages.a\n", "lib.stages.base": "from lib import pipeline\n",
             "lib.pipeline": "", "lib.harness": "", "lib.prune": "from lib.stages.base import Stage\n",
             "lib.losses": "from lib import harness\n", "scripts.x": "from lib.stages.a import GOALS\n"}
    assert violations(files) == ["lib.prune imports stage code lib.stages.base",
                                 "lib.stages.a imports stage lib.stages.b", "lib.stages.b imports stage lib.stages.a",
                                 "scripts.x imports stage code lib.stages.a",
                                 "technique lib.losses imports orchestration lib.harness"]


def test_variants_and_onnx_inference_import_without_torch():
    code = ("import sys; import lib.variants, lib.onnx_runtime, lib.errors, lib.params, lib.goals, lib.pipeline, "
            "lib.serving, lib.card, lib.manifest, lib.predict; "
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
                try:  # `from lib import bench` names a submodule, `from lib.bench import x` an attribute
                    bound[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                except ModuleNotFoundError:
                    if not hasattr(importlib.import_module(node.module), a.name):
                        missing.append(f"{node.module}.{a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            if not hasattr(bound[node.value.id], node.attr):
                missing.append(f"{bound[node.value.id].__name__}.{node.attr}")
    return missing


def test_scripts_use_only_names_lib_defines():
    """scripts/ is not run by the suite (GPU check, benchmarks): its calls into lib are checked here instead."""
    found = {p.name: dangling(p.read_text()) for p in sorted((REPO / "scripts").glob("*.py"))}
    assert {name: m for name, m in found.items() if m} == {}
    assert dangling("from lib import losses\nlosses.no_such_loss\nfrom lib.report import no_such") == [
        "lib.report.no_such", "lib.losses.no_such_loss"]
