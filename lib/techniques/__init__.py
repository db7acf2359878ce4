"""Each compression technique behind its small interface (distill, prune, quantize, export to ONNX, trim
the vocabulary, sensitivity scans); none takes a stage's parameters or trains on its own."""
