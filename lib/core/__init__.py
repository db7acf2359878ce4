"""Torch-free: the Variant record, parameters, the stage registry, manifests, goals, statistics, files, run
metadata, the CLI's ending. Imports nothing above the standard library and numpy."""
