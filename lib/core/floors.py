"""The floor plan of lib/: one package per floor, from the ground up; a module's floor is its package (lib/formats.py,
the loader registry, is a floor of one module). A module imports only modules on its own floor or lower, never in a
circle, at module level or inside a function; run_all.py, scripts/ and notebooks_src/ stand above every floor.
tests/test_floors.py holds every import to this order; DEVELOPERS.md shows it."""

FLOORS = (
    "core",        # torch-free: the record, parameters, manifests, goals, statistics, files, run metadata, the CLI's end
    "runtime",     # inference on a loaded model: ONNX Runtime, PyTorch, the fused ONNX graph
    "data",        # the corpora and their splits, the tweets, batches
    "modeling",    # seed and device, data-parallel groups, the training loop, losses
    "techniques",  # each compression technique behind its small interface
    "formats",     # the loader registry (one module), above the techniques whose loaders it names
    "predict",     # python -m lib.predict and its serving: torch-free at module level
    "ship",        # what to ship, its pictures, the folder that ships it
    "measure",     # timing, sizes, the benchmark harness, roofline, yardstick
    "report",      # figures, tables, the offline HTML
    "run",         # what run_all needs besides the stages: pre-flight, lock, records, the notebook runner
    "stages",      # one module per notebook
)

# Floors whose modules import, at module level, nothing beyond the standard library and requirements-serve.txt,
# so that serving an ONNX model never loads torch, transformers or pandas.
TORCH_FREE = ("core", "predict")

# Imports of lib modules that stay inside a function, each for the reason given; every other import of a lib
# module is at the top of its file.
LAZY = {
    ("predict.serving", "formats"): "a PyTorch-format model needs the training stack; an ONNX one must not load it",
}
