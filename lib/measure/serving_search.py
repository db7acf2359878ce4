"""The shipped ONNX model's serving settings, chosen on the machine of the run (issue 30, item 2): ONNX Runtime's
threads, intra-op spinning, graph optimization level and memory pattern, timed end to end as `python -m lib.predict`
serves (text in, label out), one setting at a time from ORT's defaults. Stage 05 ships the choice in serving.json."""
import os
from pathlib import Path
from typing import Callable

import pandas as pd

from lib.measure import bench
from lib.predict import serving
from lib.runtime.onnxrt import LEVELS, SETTINGS_FILE, SETTINGS_KEY, Settings

BATCH = 32
BATCH_TEXTS = 8  # batch 32 reads this many times the batch-1 sentences: enough whole batches for a throughput
WARMUP = 10  # sentences each newly loaded setting answers, one at a time, before any is timed
# Medians this close to the fastest are a tie: rounds on a machine that runs other work move more than that.
TIE = 0.03
RULE = (f"the fastest batch-1 median; among settings within {TIE:.0%} of it, the most sentences/s at batch {BATCH}")
# One pass, one setting at a time (a full grid is 3 x 2 x 2 x threads sessions): threads first, as spinning acts only
# through worker threads, then spinning (idle threads that spin take cores the tokenizer and other work need), then
# the graph optimization level and the memory pattern.
STEPS = ("threads", "intra_op_spinning", "graph_optimization_level", "memory_pattern")
WORDS = {"threads": "threads", "intra_op_spinning": "spinning", "graph_optimization_level": "graph optimizations",
         "memory_pattern": "memory pattern"}
ON_OFF = {True: "on", False: "off"}


def choices(step: str, max_threads: int) -> list:
    """The values a step tries: 1, 2, 4, ... threads and max_threads itself; every level; on and off."""
    if step == "threads":
        return sorted({2 ** i for i in range(max_threads.bit_length())} | {max_threads})
    return list(LEVELS) if step == "graph_optimization_level" else [True, False]


def pick(figures: dict) -> Settings:
    """RULE over {settings: (batch-1 median ms, batch-32 sentences/s)}; the earlier of equals (dicts keep order)."""
    fastest = min(ms for ms, _ in figures.values())
    tied = [s for s, (ms, _) in figures.items() if ms <= fastest * (1 + TIE)]
    return max(tied, key=lambda s: figures[s][1])


def best_rounds(time_round: Callable, candidates: list, rounds: int) -> dict:
    """{settings: (ms, sentences/s)} over `rounds` interleaved rounds, each figure its best round: load from other
    processes only adds time, and interleaving exposes every setting to the same background."""
    best = {}
    for _ in range(rounds):
        for settings in candidates:
            ms, per_s = time_round(settings)
            old_ms, old_per_s = best.get(settings, (ms, per_s))
            best[settings] = (min(ms, old_ms), max(per_s, old_per_s))
    return best


def search(time_round: Callable, max_threads: int, rounds: int) -> tuple[Settings, list[dict]]:
    """(the choice, every step's rows): each step times one setting's values with the others as chosen so far."""
    current, rows = Settings(threads=max_threads), []
    for step in STEPS:
        candidates = [current._replace(**{step: value}) for value in choices(step, max_threads)]
        if len(candidates) < 2:
            continue
        figures = best_rounds(time_round, candidates, rounds)
        current = pick(figures)
        rows += [{"step": step, **s._asdict(), "batch1_ms": ms, "batch32_per_s": per_s, "chosen": s == current}
                 for s, (ms, per_s) in figures.items()]
    return current, rows


def timer(path: Path, one: list[str], batched: list[str]) -> Callable:
    """time_round for the model at `path`: each setting loaded once through lib.predict.serving and warmed up; a
    round is the median ms of `one` sent one at a time, then sentences/s over `batched` at batch 32."""
    models = {}

    def time_round(settings: Settings) -> tuple[float, float]:
        if settings not in models:
            model = models[settings] = serving.load(path, settings=settings)
            serving.set_truncation(model.tokenizer, model.max_length)
            bench.warm_up(model, one, WARMUP)
        ms, per_s, _ = bench.served(models[settings], one, batched, BATCH)
        return ms, per_s
    return time_round


def run(path, texts: list[str], max_threads: int, n: int, rounds: int) -> dict:
    """What stage 05 ships in serving.json and writes to its metrics: the choice (under SETTINGS_KEY, which predict
    reads), the rule, and every step's figures, over the first n texts at batch 1 and BATCH_TEXTS * n at batch 32."""
    os.environ["RAYON_NUM_THREADS"] = str(max_threads)  # the tokenizer's pool as predict pins it (at its first batch)
    one, batched = texts[:n], texts[:BATCH_TEXTS * n]
    chosen, rows = search(timer(Path(path), one, batched), max_threads, rounds)
    return {SETTINGS_KEY: chosen._asdict(), "rule": RULE, "rounds": rounds,
            "sentences": {"batch_1": len(one), f"batch_{BATCH}": len(batched)}, "measured": rows}


def table(record: dict) -> pd.DataFrame:
    """The report's table: each step's settings, their figures, and which one the step kept."""
    rows = pd.DataFrame(record["measured"])
    return pd.DataFrame({"step": rows["step"].map(WORDS), "threads": rows["threads"],
                         "graph optimizations": rows["graph_optimization_level"],
                         "spinning": rows["intra_op_spinning"].map(ON_OFF),
                         "memory pattern": rows["memory_pattern"].map(ON_OFF),
                         "e2e ms (batch 1)": rows["batch1_ms"],
                         f"e2e sentences/s (batch {BATCH})": rows["batch32_per_s"],
                         "chosen": rows["chosen"].map({True: "yes", False: ""})})


def summary(record: dict | None, why_none: str) -> str:
    """One paragraph for the report: the settings shipped, how they were chosen; `why_none` when none were searched."""
    if record is None:
        return f"Serving settings were not searched ({why_none}): `python -m lib.predict` runs ONNX Runtime's defaults."
    chosen = Settings(**record[SETTINGS_KEY])
    said = ", ".join(f"{WORDS[k]} {ON_OFF[v] if isinstance(v, bool) else v}" for k, v in chosen._asdict().items())
    return (f"Shipped in `{SETTINGS_FILE}`, read by `python -m lib.predict`: **{said}**, chosen on this machine by "
            f"{len({r['step'] for r in record['measured']})} steps of one setting each, {record['rounds']} interleaved "
            f"rounds per step (each setting keeps its best round), {record['sentences']['batch_1']} validation "
            f"sentences at batch 1 and {record['sentences'][f'batch_{BATCH}']} at batch {BATCH}, end to end. "
            f"Rule: {RULE}.")


def chosen(record: dict | None) -> Settings | None:
    """The settings a search record ships (what predict will read from serving.json); None without a search."""
    return Settings(**record[SETTINGS_KEY]) if record else None
