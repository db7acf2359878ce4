"""PyTorch inference the way every stage scores a model: eval mode, no autograd, only the inputs a BERT takes."""
import torch

from lib.core.variants import INPUT_NAMES


def torch_predictor(model):
    """inputs -> logits for a PyTorch classifier: eval mode, no autograd, only the inputs a BERT takes."""
    model.eval()

    def predict(inputs: dict):
        with torch.inference_mode():
            return model(**{k: v for k, v in inputs.items() if k in INPUT_NAMES}).logits
    return predict
