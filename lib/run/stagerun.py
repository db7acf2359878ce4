"""Executing one stage notebook for run_all: papermill in a kernel of its own, Ctrl-C passed on to it, its report
rendered whether it succeeded or not."""
import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from lib.core import pipeline
from lib.core.files import REPO_ROOT
from lib.core.params import PLAN_ENV
from lib.modeling.distributed import dist_env
from lib.report.card import page_card
from lib.report.render import render_html

INTERRUPTED = "interrupted (Ctrl-C)"  # a stage's status when Ctrl-C stopped it


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
    nb = jupytext.read(pipeline.NOTEBOOKS / f"{stage}.py")
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
    card = page_card(reports, stage, error)
    render_html(nbformat.read(executed, as_version=4), reports / f"{stage}.html", card)
    return not error, error


def run_interruptible(stage: str, params: dict, reports: Path) -> tuple[bool, str]:
    """run_stage, except that Ctrl-C answers (False, INTERRUPTED): run_all then records the stage as not done,
    reports it as interrupted and exits 130."""
    if dist_env()[2] > 1:
        os.environ["FINCOMPRESS_DDP_PORT"] = str(int(os.environ["MASTER_PORT"]) + 1 + 100 * pipeline.NAMES.index(stage))
    try:
        with forward_interrupt() as hits:
            result = run_stage(stage, params, reports)
    except KeyboardInterrupt:  # a second Ctrl-C stops the stage at once
        return False, INTERRUPTED
    # Checkpoints are swapped in atomically, so the stage's previous ones are still whole.
    return (False, INTERRUPTED) if hits else result
