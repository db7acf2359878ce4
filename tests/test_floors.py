"""The floor plan (lib/core/floors.py) held against every import of the code: lib/, run_all.py, scripts/ and the
notebooks, at module level and inside functions. A planted circle and a planted upward import must fail."""
import ast
import re
import shutil
import sys
from pathlib import Path

from lib.core import floors
from tests.conftest import REPO

SERVE_PACKAGES = {"numpy", "onnxruntime", "tokenizers"}  # requirements-serve.txt


def lib_modules(root: Path) -> set[str]:
    """lib's modules as FLOORS names them: lib/stages/base.py is "stages.base"; packages' __init__ files left out."""
    return {".".join(p.relative_to(root / "lib").with_suffix("").parts) for p in (root / "lib").rglob("*.py")
            if p.name != "__init__.py"}


def sources(root: Path) -> dict[str, Path]:
    """Every file whose imports are held to the plan, by the name the checks use: lib modules by their FLOORS
    name, the rest by their path (scripts import each other by bare name: scripts/x.py is "x" to them)."""
    files = {m: root / "lib" / (m.replace(".", "/") + ".py") for m in lib_modules(root)}
    for path in [root / "run_all.py", *(root / "scripts").glob("*.py"), *(root / "notebooks_src").glob("*.py")]:
        files[str(path.relative_to(root))] = path
    return files


def in_function(tree: ast.AST) -> set[int]:
    """ids of the import nodes that sit inside a function."""
    inner = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return inner


def imports(path: Path, modules: set[str], scripts: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for each lib module or sibling script a file imports."""
    tree, out = ast.parse(path.read_text(encoding="utf-8")), []
    inner = in_function(tree)

    def known(name: str) -> str | None:
        if name.startswith("lib.") and name.removeprefix("lib.") in modules:
            return name.removeprefix("lib.")
        return f"scripts/{name}.py" if f"scripts/{name}.py" in scripts else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = [known(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from lib.measure import bench` names lib.measure.bench; so does `from lib.measure.bench import x`
            found = [known(f"{node.module}.{a.name}") for a in node.names]
            found = found if any(found) else [known(node.module)]
        else:
            continue
        out += [(dep, node.lineno, id(node) in inner) for dep in found if dep]
    return out


def file_of(module: str) -> str:
    return f"lib/{module.replace('.', '/')}.py"


def floor_of(module: str) -> str:
    """A module's floor is its package: "techniques.prune" is on floor techniques, "formats" on floor formats."""
    return module.split(".")[0]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each group of files that import each other in a loop (Tarjan's strongly connected components)."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1 or v in edges.get(v, ()):
                found.append(sorted(group))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def check(root: Path, plan: tuple, lazy: dict) -> list[str]:
    """Every way the code at root departs from the plan, one line each."""
    modules, files = lib_modules(root), sources(root)
    out = [f"{file_of(m)} is on no floor of lib/core/floors.py" for m in sorted(modules) if floor_of(m) not in plan]
    level, edges = {m: plan.index(floor_of(m)) for m in modules if floor_of(m) in plan}, {}
    scripts = {name for name in files if name.startswith("scripts/")}
    for name, path in files.items():
        for dep, line, inner in imports(path, modules, scripts):
            edges.setdefault(name, set()).add(dep)
            where = f"{path.relative_to(root)}:{line}"
            if name in level and dep in level and level[dep] > level[name]:
                out.append(f"{where}: {name} (floor {floor_of(name)}) imports {dep} from the higher floor {floor_of(dep)}")
            if name in level and dep.startswith("stages.") and name.startswith("stages.") and dep != "stages.base":
                out.append(f"{where}: stage {name} imports stage {dep}; stages talk through variants and reads")
            if name in level and inner and (name, dep) not in lazy:
                out.append(f"{where}: {name} imports {dep} inside a function; import it at the top, or declare why "
                           "in lib/core/floors.py LAZY")
            if name.startswith("scripts/") and dep.startswith("stages."):
                out.append(f"{where}: {name} imports stage {dep}; a script reads a stage's JSON")
    out += [f"import circle: {' -> '.join(group)}" for group in circles(edges)]
    return out


def torch_free_problems(root: Path, torch_free: tuple) -> list[str]:
    """Module-level imports, in the torch-free floors, of anything beyond the standard library and the serving
    requirements."""
    out = []
    for floor_name in torch_free:
        for m in sorted(m for m in lib_modules(root) if floor_of(m) == floor_name):
            path = root / "lib" / (m.replace(".", "/") + ".py")
            tree = ast.parse(path.read_text(encoding="utf-8"))
            inner = in_function(tree)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in inner and not getattr(node, "level", 0):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                    for top in {n.split(".")[0] for n in names}:
                        if top not in {"lib", *SERVE_PACKAGES} and top not in sys.stdlib_module_names:
                            out.append(f"{file_of(m)}:{node.lineno} imports {top} at module level (floor {floor_name} "
                                       "is torch-free)")
    return out


def test_the_code_keeps_the_floor_plan():
    assert {"stages.benchmark", "formats", "core.variants"} <= lib_modules(REPO) and "scripts/gpu_check.py" in sources(REPO)
    assert check(REPO, floors.FLOORS, floors.LAZY) == []
    assert torch_free_problems(REPO, floors.TORCH_FREE) == []


def planted(tmp_path: Path) -> Path:
    """A copy of the code the checks read (lib/, scripts/, notebooks_src/, run_all.py)."""
    for name in ("lib", "scripts", "notebooks_src"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "run_all.py", tmp_path / "run_all.py")
    return tmp_path


def plant(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code, encoding="utf-8")


def test_a_planted_circle_fails(tmp_path):
    root = planted(tmp_path)
    plant(root / "lib" / "core" / "params.py", "def resolve():\n    from lib.core import stats\n")  # downward, lazy
    plant(root / "lib" / "core" / "stats.py", "from lib.core import params\n")  # same floor: a circle with it
    plant(root / "scripts" / "gpu_common.py", "from gpu_check import NEEDED\n")  # the old scripts circle
    found = check(root, floors.FLOORS, floors.LAZY)
    assert "import circle: core.params -> core.stats" in found
    assert "import circle: scripts/gpu_check.py -> scripts/gpu_check_train.py -> scripts/gpu_common.py" in found
    assert any(re.fullmatch(r"lib/core/params.py:\d+: core.params imports core.stats inside a function; .*", f)
               for f in found)


def test_a_planted_upward_import_fails(tmp_path):
    root = planted(tmp_path)
    plant(root / "lib" / "core" / "variants.py", "def load():\n    from lib import formats\n    return formats\n")
    plant(root / "lib" / "techniques" / "quantize.py", "from lib.stages.base import Stage\n")
    found = check(root, floors.FLOORS, {**floors.LAZY, ("core.variants", "formats"): "planted"})
    assert sorted(f.split(": ", 1)[1] for f in found if "higher floor" in f) == [
        "core.variants (floor core) imports formats from the higher floor formats",
        "techniques.quantize (floor techniques) imports stages.base from the higher floor stages"]
    (root / "lib" / "newcomer.py").write_text("from lib.core import errors\n")
    assert "lib/newcomer.py is on no floor of lib/core/floors.py" in check(root, floors.FLOORS, floors.LAZY)


def test_a_new_module_takes_its_packages_floor(tmp_path):
    """Adding a technique costs no floor-plan edit: its package is its floor, and the rules hold at once."""
    root = planted(tmp_path)
    (root / "lib" / "techniques" / "newcomer.py").write_text("from lib.core import errors\nfrom lib import formats\n")
    found = check(root, floors.FLOORS, floors.LAZY)
    assert [f.split(": ", 1)[1] for f in found] == [
        "techniques.newcomer (floor techniques) imports formats from the higher floor formats"]


def test_a_torch_import_in_a_torch_free_floor_fails(tmp_path):
    root = planted(tmp_path)
    plant(root / "lib" / "predict" / "serving.py", "import torch\n")
    found = torch_free_problems(root, floors.TORCH_FREE)
    assert len(found) == 1 and re.fullmatch(r"lib/predict/serving.py:\d+ imports torch at module level \(floor predict "
                                            r"is torch-free\)", found[0]), found


def test_developers_md_shows_the_floor_plan():
    text = (REPO / "DEVELOPERS.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)(?:/|\.py)` \| .+ \|$", text, re.M)
    assert tuple(rows) == floors.FLOORS
    assert {floor_of(m) for m in lib_modules(REPO)} == set(floors.FLOORS)
