"""The floor plan of lib/: every module's floor, from the ground up. A module imports only modules on its own floor
or lower, never in a circle, at module level or inside a function; run_all.py, scripts/ and notebooks_src/ stand
above every floor. tests/test_floors.py holds every import to this map; DEVELOPERS.md shows it."""

FLOORS = {
    # torch-free: the record, parameters, manifests, goals, statistics, the CLI's ending (stdlib and numpy only)
    "core": ["errors", "floors", "model_source", "params", "pipeline", "manifest", "goals", "stats", "textnorm",
             "variants", "cli", "runlock"],
    "plumbing": ["common"],  # seeds, device, data-parallel groups, atomic writes, run metadata
    "runtime": ["torch_runtime", "onnx_runtime", "ort_runtime", "onnx_graph"],  # inference on loaded models
    "data": ["batching", "ood", "data"],
    "modeling": ["parallel", "train", "losses"],  # loading, the training loop, metrics, losses, sharding
    "techniques": ["distill", "prune", "quantize_static", "quantize", "onnx_export", "sensitivity", "vocab"],
    "formats": ["formats"],  # the loader registry, above the techniques whose loaders it names
    "serving": ["serving", "predict"],  # torch-free at module level: a PyTorch format loads lib.formats on demand
    "ship": ["ship", "pareto", "export", "card"],  # what to ship, and the folder that ships it
    "measure": ["bench", "harness", "speed", "yardstick", "ood_eval"],
    "report": ["render", "report"],
    "run": ["runstate", "stagerun", "preflight"],  # what run_all needs besides the stages
    "stages": ["stages.base", "stages.data_teacher", "stages.distillation", "stages.quantization",
               "stages.pruning", "stages.stacking", "stages.benchmark"],
}

# Floors whose modules import, at module level, nothing beyond the standard library and requirements-serve.txt,
# so that serving an ONNX model never loads torch, transformers or pandas.
TORCH_FREE = ("core", "serving")

# Imports of lib modules that stay inside a function, each for the reason given; every other import of a lib
# module is at the top of its file.
LAZY = {
    ("serving", "formats"): "a PyTorch-format model needs the training stack; an ONNX one must not load it",
}
