"""Notebook parameters: each notebook's parameters cell is the one source of names, defaults, help, ranges
and presets. A line reads `name = default  # help [tag] [tag]`; the trailing tags are

    [min X] [max X] [above X] [in A..B]   allowed range (inclusive; `above` excludes X)
    [one of a, b, c]                      allowed values
    [each of a, b, c]                     comma-separated, each one of these (empty for none)
    [levels]                              comma-separated shares, each in [0, 1), increasing; a cell's
                                          [levels] lists pair up level by level (same length), no two
                                          levels the same in whole percents (they name the variant)
    [smoke V] [gpu V] [bert-base V]       presets: run_all --smoke, --gpu, a teacher of that family

Help text holds no `=` (papermill's parser splits on it). Torch-free: run_all's pre-flight stays light.
"""
import ast
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lib.core.errors import FinCompressError
from lib.core.model_source import resolve_model_source

# A preset names a teacher family recognised from the teacher's config.json, never from its name:
# a local copy of FinBERT and the Hub id get the same step size.
FAMILIES = {"bert-base": lambda config: config.get("hidden_size") == 768}
PRESETS = ("smoke", "gpu", *FAMILIES)
TAG = re.compile(r"\s*\[([^\[\]]+)\]\s*$")
# Set by run_all for the notebook it executes: that stage's parameter names, already parsed and checked.
PLAN_ENV = "FINCOMPRESS_STAGE_PLAN"
KINDS = {int: "an integer", float: "a number", bool: "True or False", str: "a text"}  # a type, in words


def range_text(low=None, high=None, low_open=False) -> str:
    """An allowed range as people write it: '>= 1', '> 0', '<= 512', 'in [0, 1]', 'in (0, 1]'."""
    if low is None:
        return f"<= {high}"
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}]"


def check_range(name: str, value, low=None, high=None, low_open=False) -> None:
    """Reject an out-of-range value with a message that names it and the allowed range."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        raise FinCompressError(f"parameter {name}={value!r} is out of range: it must be "
                               f"{range_text(low, high, low_open)}; pass a value inside it")


def percent(share: float) -> int:
    """A [levels] share as the whole percent that names its variant (0.3 -> 30)."""
    return round(share * 100)


def sparsities(name: str, text) -> list[float]:
    """A comma-separated list of shares of units to remove, each in [0, 1); at least one."""
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise FinCompressError(f"parameter {name}={text!r} must be comma-separated numbers like '0.3,0.5'") from None
    if not vals:
        raise FinCompressError(f"parameter {name} is empty; pass comma-separated shares like '0.3,0.5'")
    for v in vals:
        if not 0 <= v < 1:
            raise FinCompressError(f"parameter {name} has {v}; each sparsity must be in [0, 1) since every layer keeps a unit")
    return vals


def listed(name: str, text: str, allowed: tuple) -> list[str]:
    """An [each of] parameter's names, in order; one that is not allowed is one line naming the ones that are."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    for x in names:
        if x not in allowed:
            raise FinCompressError(f"parameter {name}={text!r} names {x!r}; pass a comma-separated list of "
                                   f"{', '.join(allowed)} (empty for none)")
    return names


def parse_value(text: str, default):
    """A value written as text (--set, a preset tag) as a Python literal; a str parameter takes the text as
    written (quotes optional), so `head_levels=0.3,0.5` is not read as a tuple."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return text if isinstance(default, str) and not isinstance(value, str) else value


@dataclass
class Param:
    """One line of a parameters cell: default, help, allowed values and presets."""
    name: str
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple | None = None
    each: tuple | None = None
    levels: bool = False
    presets: dict = field(default_factory=dict)

    def check(self, value) -> None:
        """Type of the default (an int passes for a float), then range, allowed values, sparsity list."""
        d = self.default
        if value == "" and not isinstance(d, str):
            raise FinCompressError(f"parameter {self.name} is empty; pass {KINDS.get(type(d), 'a value')} like its "
                                   f"default {d!r}")
        # bool is an int subclass: epochs=True would run as 1 epoch
        wrong = isinstance(value, bool) and not isinstance(d, bool)
        if wrong or not isinstance(value, type(d)) and not (isinstance(d, float) and isinstance(value, int)):
            raise FinCompressError(f"parameter {self.name}={value!r} should be {KINDS.get(type(d), 'a value')} "
                                   f"like its default {d!r}")
        if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as inf and passes any lower bound
            raise FinCompressError(f"parameter {self.name}={value!r} is not a finite number; pass one like its "
                                   f"default {d!r}")
        if self.low is not None or self.high is not None:
            check_range(self.name, value, self.low, self.high, self.low_open)
        if self.choices and value not in self.choices:
            raise FinCompressError(f"parameter {self.name}={value!r} must be one of {', '.join(map(str, self.choices))}")
        if self.each:
            listed(self.name, value, self.each)
        if self.levels:
            sparsities(self.name, value)

    def tag(self, tag: str) -> None:
        """Apply one trailing [tag] of the help text."""
        word, _, arg = tag.partition(" ")
        if tag.startswith("one of "):
            self.choices = tuple(parse_value(x.strip(), self.default) for x in tag[len("one of "):].split(","))
        elif tag.startswith("each of "):
            self.each = tuple(x.strip() for x in tag[len("each of "):].split(","))
        elif word in ("min", "above"):
            self.low, self.low_open = ast.literal_eval(arg), word == "above"
        elif word == "max":
            self.high = ast.literal_eval(arg)
        elif word == "in" and ".." in arg:
            self.low, self.high = (ast.literal_eval(x) for x in arg.split(".."))
        elif tag == "levels":
            self.levels = True
        elif word in PRESETS:
            self.presets[word] = parse_value(arg.strip(), self.default)
        else:
            raise FinCompressError(f"parameter {self.name}: unknown annotation [{tag}]; use min, max, above, in A..B, "
                                   f"one of, each of, levels, or a preset ({', '.join(PRESETS)})")


def parse_line(line: str) -> Param:
    """`name = default  # help [tag] [tag]` as a Param."""
    code, _, help_text = line.partition("#")
    name, _, value = code.partition("=")
    tags = []
    while match := TAG.search(help_text):
        tags.insert(0, match.group(1).strip())
        help_text = help_text[:match.start()]
    param = Param(name.strip(), ast.literal_eval(value.strip()), help_text.strip())
    for tag in tags:
        param.tag(tag)
    for value in (param.default, *param.presets.values()):  # a default or preset out of range is the notebook's bug
        param.check(value)
    return param


def parse_parameters(source: str) -> dict[str, Param]:
    """The Params of a percent-format notebook's parameters cell, in order."""
    lines = source.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("# %%") and "parameters" in l)
    except StopIteration:
        raise FinCompressError("notebook has no '# %% tags=[\"parameters\"]' cell") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# %%")), len(lines))
    return parse_cell(lines[start + 1:end])


def parse_cell(lines: list[str]) -> dict[str, Param]:
    """The Params of a parameters cell's lines, in order (blank and comment lines skipped)."""
    params = {}
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            param = parse_line(line)
            params[param.name] = param
    return params


def check_values(spec: dict[str, Param], values: dict) -> None:
    """Every value against its Param (a name the cell does not declare is an error), then the [levels] lists
    together: one level each, in increasing order, each continuing the previous and named apart from it."""
    for name, value in values.items():
        if name not in spec:
            raise FinCompressError(f"unknown parameter {name!r}; known: {', '.join(spec)}")
        spec[name].check(value)
    levels = {name: sparsities(name, value) for name, value in values.items() if spec[name].levels}
    if len({len(v) for v in levels.values()}) > 1:
        counts = ", ".join(f"{name} {len(v)}" for name, v in levels.items())
        raise FinCompressError(f"{' and '.join(levels)} need the same number of values (one per level); got {counts}")
    for name, v in levels.items():
        if v != sorted(v):
            raise FinCompressError(f"parameter {name}={values[name]!r} must increase: each level continues pruning the previous one")
    named = [tuple(map(percent, level)) for level in zip(*levels.values())]
    if len(set(named)) < len(named):
        lists = " and ".join(f"{name}={values[name]!r}" for name in levels)
        raise FinCompressError(f"{lists} give two levels the same whole percents, so both would write one variant; "
                               "make each level prune more than the previous in at least one list")


def notebook_values(stage: str, scope, notebook: Path) -> dict:
    """A running notebook's parameter values, read from its globals. Under run_all the names come with the
    plan it already parsed and checked; run from Jupyter, the notebook's own cell is parsed and checked here."""
    plan = json.loads(os.environ.get(PLAN_ENV) or "{}")
    if plan.get("stage") == stage:
        return {name: scope[name] for name in plan["names"]}
    spec = parse_parameters(Path(notebook).read_text(encoding="utf-8"))
    values = {name: scope.get(name, p.default) for name, p in spec.items()}
    check_values(spec, values)
    return values


def model_family(config: dict) -> str | None:
    """The preset family a model's config.json belongs to (None: the CPU defaults apply)."""
    return next((name for name, matches in FAMILIES.items() if matches(config)), None)


def model_config(name: str) -> dict:
    """config.json of a local model folder, the packaged MiniLM, or a Hub id (read from the Hub's cache or downloaded)."""
    import logging
    source = Path(resolve_model_source(name))
    if (source / "config.json").is_file():
        return json.loads((source / "config.json").read_text(encoding="utf-8"))
    from huggingface_hub import hf_hub_download
    hub_log = logging.getLogger("huggingface_hub")
    level, hub_log.level = hub_log.level, logging.ERROR  # its retries would print a page before our one line
    try:
        path = hf_hub_download(name, "config.json")
    except Exception as e:  # any network or repo failure ends in the same advice
        raise FinCompressError(f"cannot read teacher {name!r}'s config.json from the Hugging Face Hub ({type(e).__name__}); "
                               "run once with internet or pass a local model folder with --teacher") from None
    finally:
        hub_log.setLevel(level)
    return json.loads(Path(path).read_text(encoding="utf-8"))
