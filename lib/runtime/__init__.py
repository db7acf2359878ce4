"""Inference on a loaded model, ONNX Runtime (torch-free) or PyTorch, and the fused ONNX BERT graph."""
