"""What every stage shares: parameters, seed, device and paths, reading earlier stages, the StageResult it writes.

A stage module subclasses Stage. STEPS names the methods its notebook calls, section by section and in this
order (plots and tables in between only read the state); run() calls the same ones headlessly. outcome()
says what the stage found: metrics, headline, verdict, goal checks and the variants it wrote.
"""
import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from lib.core import pipeline
from lib.core.errors import FinCompressError
from lib.core.files import relative_path, stage_paths, student_folder, write_json
from lib.core.params import notebook_values
from lib.core.pipeline import NOTEBOOKS
from lib.core.runinfo import format_run_info
from lib.core.variants import Variant, detect
from lib.modeling.device import resolve_device, run_info, set_seed
from lib.report.plots import save_png

DISTILLATION = "02_distillation"  # its best student on val carries metrics["best_student"] = True


@dataclass
class StageResult:
    """reports/<stage>.json: later stages, the index page, scripts and tests read this, never HTML."""
    stage: str
    run_info: dict
    headline: dict
    verdict: str
    metrics: dict
    goals: list = field(default_factory=list)     # goals.Goal.check records
    variants: list = field(default_factory=list)  # the Variants this stage wrote

    def to_json(self) -> dict:
        return {"stage": self.stage, "run_info": self.run_info, "headline": self.headline, "verdict": self.verdict,
                "goals": self.goals, "variants": [v.to_dict() for v in self.variants], "metrics": self.metrics}

    def write(self, reports: Path) -> Path:
        path = Path(reports) / f"{self.stage}.json"
        write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, reports: Path, stage: str) -> "StageResult":
        path = Path(reports) / f"{stage}.json"
        if not path.is_file():
            key = pipeline.entry(stage).key
            raise FinCompressError(f"{path} is missing; run stage {key} first (python run_all.py --only {key})")
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(d["stage"], d["run_info"], d["headline"], d.get("verdict", ""), d["metrics"], d.get("goals", []),
                   [Variant.from_dict(v) for v in d.get("variants", [])])


class Stage:
    NAME = ""     # the notebook notebooks_src/<NAME>.py and the report reports/<NAME>.*
    STEPS = ()    # the methods the notebook calls, in order

    def __init__(self, scope, name: str | None = None):
        """scope: the notebook's globals() (or a dict of parameters; missing ones take the cell's defaults)."""
        self.name = name or self.NAME
        self.started = time.time()
        self.params = notebook_values(self.name, scope, NOTEBOOKS / f"{self.name}.py")
        self.p = SimpleNamespace(**self.params)
        set_seed(self.p.seed)
        self.device = resolve_device(self.params.get("gpu", False))
        self.paths = stage_paths(self.p.out_dir)
        self.info = run_info(self.p.seed, self.device, self.params)
        print(format_run_info(self.info))

    def run(self) -> StageResult:
        """Every step the notebook runs, without its plots, then finish()."""
        for step in self.STEPS:
            getattr(self, step)()
        return self.finish()

    def outcome(self) -> dict:
        """StageResult fields (metrics, headline, verdict, goals, variants) from the steps' state."""
        raise NotImplementedError(f"{type(self).__name__} must say what its result is")

    def finish(self, **parts) -> StageResult:
        """Write reports/<stage>.json; parts default to outcome(). Its run_info says when it finished and how long it took."""
        self.info.update(seconds=round(time.time() - self.started, 1),
                         finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        result = StageResult(self.name, self.info, **{"headline": {}, "verdict": "", "metrics": {},
                                                     **(parts or self.outcome())})
        result.write(self.paths["reports"])
        return result

    def save_figure(self, fig, name: str):
        """reports/img/<stage>_<name>.png (atomically) for the index page's thumbnails; returns the figure."""
        save_png(fig, self.paths["reports"] / "img" / f"{self.name}_{name}.png")
        return fig

    def result_of(self, stage: str) -> StageResult:
        return StageResult.read(self.paths["reports"], stage)

    def upstream_variants(self) -> list[Variant]:
        """Every variant the stages before this one listed, in stage order (the teacher first)."""
        found = []
        for stage in pipeline.producers(self.name):
            if stage == pipeline.SOURCE or (self.paths["reports"] / f"{stage}.json").is_file():
                found += self.result_of(stage).variants
        return found

    def sources(self, student_dir: str) -> dict[str, Variant]:
        """The FP32 models a compression stage starts from: stage 01's teacher and a student ('' is stage 02's
        best, 'none' none, else a model folder: absolute, relative to the working dir, or to out_dir)."""
        teacher = self.result_of(pipeline.SOURCE).variants[0]  # the source stage lists the teacher alone
        if not (teacher.location(self.paths["root"]) / "config.json").is_file():
            raise FinCompressError(f"no teacher checkpoint at {teacher.location(self.paths['root'])}; run stage 01 "
                                   "first (python run_all.py --only 01)")
        out, key = {"teacher": teacher}, student_dir.strip()
        if key.lower() == "none":
            return out
        if not key:
            report = self.paths["reports"] / f"{DISTILLATION}.json"
            if not report.is_file():
                raise FinCompressError(f"{report} is missing, so there is no best student; run stage 02 first or pass "
                                       f"--set {pipeline.entry(self.name).key}.student_dir=PATH or =none")
            out["student"] = next(v for v in self.result_of(DISTILLATION).variants if v.metrics.get("best_student"))
            return out
        path = student_folder(key, self.paths["root"])
        v = detect(path)
        v.path = relative_path(path, self.paths["root"])
        out["student"] = v
        return out
