"""Torch-free at module level: `python -m lib.predict` and the serving it needs (rows in, labels out).
A PyTorch-format model loads lib.formats on demand; an ONNX one never loads torch."""
