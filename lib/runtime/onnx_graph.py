"""A BERT classifier written straight into an ONNX graph with ONNX Runtime's fused contrib ops.

Why: at batch 1 a small BERT in ONNX Runtime spends its time on per-node overhead, not arithmetic.
torch.onnx's graph for transformers 5 BERT has over a dozen nodes per attention block (Q/K/V MatMuls, Reshapes,
Transposes, Softmax, mask arithmetic) that ORT's fusion passes no longer recognise. Writing the graph
from the weights puts each attention block into one `com.microsoft.Attention` node (packed QKV weights,
raw 0/1 mask), which ORT's dynamic quantizer turns into `QAttention`; the rest is plain ONNX that ORT
fuses further at load time (Add+LayerNormalization -> SkipLayerNormalization, Add+Gelu -> BiasGelu).
Pruned layers (fewer heads or FFN neurons per layer) only change the weight shapes.
"""
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from lib.core.errors import FinCompressError

OPSET = 20  # Gelu became a standard op in opset 20
MS_DOMAIN = "com.microsoft"
SCOPES = "pkg.torch.onnx.name_scopes"


def supports(model) -> bool:
    return not why_unsupported(model)


def why_unsupported(model) -> str:
    """Empty if `model` is a BERT classifier this writer handles, else the reason it is not."""
    cfg = getattr(model, "config", None)
    if cfg is None or type(model).__name__ != "BertForSequenceClassification":
        return f"{type(model).__name__} is not BertForSequenceClassification"
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {cfg.position_embedding_type!r} is not absolute"
    if cfg.hidden_act != "gelu":
        return f"hidden_act {cfg.hidden_act!r} is not exact gelu"
    if cfg.problem_type not in (None, "single_label_classification"):
        return f"problem_type {cfg.problem_type!r} is not single-label classification"
    # A technique that reshapes a layer (a factorized FFN, say) exports through torch.onnx instead of failing here.
    odd = [name for name, m in dense_modules(model) if not isinstance(m, torch.nn.Linear)]
    return f"{odd[0]} is a {type(model.get_submodule(odd[0])).__name__}, not an nn.Linear" if odd else ""


def dense_modules(model) -> list[tuple[str, object]]:
    """Every module the writer reads as one Linear (weight, bias), by name."""
    names = ["bert.pooler.dense", "classifier"] + [
        f"bert.encoder.layer.{i}.{m}" for i in range(len(model.bert.encoder.layer))
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "intermediate.dense", "output.dense")]
    return [(n, model.get_submodule(n)) for n in names]


class Graph:
    """Nodes and initializers of one graph; names are unique because every caller passes a module path."""

    def __init__(self):
        self.nodes, self.inits, self.value_info = [], [], []

    def weight(self, name: str, tensor) -> str:
        array = tensor.detach().float().cpu().numpy() if torch.is_tensor(tensor) else np.asarray(tensor)
        # np.array, not ascontiguousarray: that would turn the scalar CLS index into a 1-D tensor.
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list, name: str, domain: str = "", modules=(), **attrs) -> str:
        """Add a node whose output is named like the node. `modules`: the torch modules it computes, under
        the metadata key torch.onnx uses, so quantize.onnx_nodes_for can keep chosen modules FP32."""
        node = helper.make_node(op_type, inputs, [name], name=name, domain=domain or None, **attrs)
        if modules:
            helper.set_metadata_props(node, {SCOPES: repr(list(modules))})
        self.nodes.append(node)
        return name

    def linear(self, x: str, linear, name: str) -> str:
        """x @ W^T + b as MatMul then Add: the MatMul is what the dynamic quantizer makes INT8."""
        y = self.op("MatMul", [x, self.weight(f"{name}.weight_t", linear.weight.t())], f"{name}/MatMul", modules=[name])
        return self.op("Add", [y, self.weight(f"{name}.bias", linear.bias)], f"{name}/Add")

    def layer_norm(self, x: str, norm, name: str) -> str:
        return self.op("LayerNormalization", [x, self.weight(f"{name}.weight", norm.weight),
                                              self.weight(f"{name}.bias", norm.bias)], name, axis=-1, epsilon=norm.eps)


def embeddings(g: Graph, emb, prefix: str) -> str:
    """Word + position + token-type embeddings, then LayerNorm (BERT positions are 0..S-1)."""
    words = g.op("Gather", [g.weight(f"{prefix}.word_embeddings.weight", emb.word_embeddings.weight), "input_ids"],
                 f"{prefix}.word_embeddings", modules=[f"{prefix}.word_embeddings"])
    shape = g.op("Shape", ["input_ids"], f"{prefix}/shape")
    seq_len = g.op("Slice", [shape, g.weight(f"{prefix}/one", np.array([1])), g.weight(f"{prefix}/two", np.array([2]))],
                   f"{prefix}/seq_len")
    positions = g.op("Slice", [g.weight(f"{prefix}.position_embeddings.weight", emb.position_embeddings.weight),
                               g.weight(f"{prefix}/zero", np.array([0])), seq_len], f"{prefix}.position_embeddings")
    types = g.op("Gather", [g.weight(f"{prefix}.token_type_embeddings.weight", emb.token_type_embeddings.weight),
                            "token_type_ids"], f"{prefix}.token_type_embeddings", modules=[f"{prefix}.token_type_embeddings"])
    x = g.op("Add", [g.op("Add", [words, positions], f"{prefix}/add_pos"), types], f"{prefix}/add_types")
    return g.layer_norm(x, emb.LayerNorm, f"{prefix}.LayerNorm")


def encoder_layer(g: Graph, layer, prefix: str, x: str, mask: str) -> str:
    """One BERT layer: fused self-attention, output projection + residual + LayerNorm, then the FFN."""
    att = layer.attention.self
    qkv_w = torch.cat([att.query.weight, att.key.weight, att.value.weight]).t()
    qkv_b = torch.cat([att.query.bias, att.key.bias, att.value.bias])
    a = g.op("Attention", [x, g.weight(f"{prefix}.attention.self.qkv_weight_t", qkv_w),
                           g.weight(f"{prefix}.attention.self.qkv_bias", qkv_b), mask],
             f"{prefix}.attention.self", domain=MS_DOMAIN, num_heads=att.num_attention_heads,
             modules=[f"{prefix}.attention.self.{m}" for m in ("query", "key", "value")])
    # ONNX shape inference cannot type a contrib op's output, and the quantizer needs every MatMul input typed.
    g.value_info.append(helper.make_tensor_value_info(a, TensorProto.FLOAT, ["batch", "sequence", att.all_head_size]))
    a = g.op("Add", [g.linear(a, layer.attention.output.dense, f"{prefix}.attention.output.dense"), x],
             f"{prefix}.attention.output/residual")
    h = g.layer_norm(a, layer.attention.output.LayerNorm, f"{prefix}.attention.output.LayerNorm")
    f = g.op("Gelu", [g.linear(h, layer.intermediate.dense, f"{prefix}.intermediate.dense")], f"{prefix}.intermediate.gelu")
    f = g.op("Add", [g.linear(f, layer.output.dense, f"{prefix}.output.dense"), h], f"{prefix}.output/residual")
    return g.layer_norm(f, layer.output.LayerNorm, f"{prefix}.output.LayerNorm")


def bert_graph(model) -> onnx.ModelProto:
    """The whole classifier: inputs input_ids/attention_mask/token_type_ids (int64, batch x sequence) -> logits."""
    reason = why_unsupported(model)
    if reason:
        raise FinCompressError(f"the fused ONNX writer does not handle this model: {reason}; use quantize.export_onnx")
    model = model.cpu().eval()
    g, bert = Graph(), model.bert
    x = embeddings(g, bert.embeddings, "bert.embeddings")
    mask = g.op("Cast", ["attention_mask"], "bert/mask_int32", to=TensorProto.INT32)
    for i, layer in enumerate(bert.encoder.layer):
        x = encoder_layer(g, layer, f"bert.encoder.layer.{i}", x, mask)
    # Pooler and classifier stay Gemm: ORT has no dynamic INT8 Gemm, so they remain FP32 (tiny and sensitive).
    cls = g.op("Gather", [x, g.weight("bert.pooler/cls_index", np.array(0))], "bert.pooler/cls", axis=1)
    pooled = g.op("Tanh", [g.op("Gemm", [cls, g.weight("bert.pooler.dense.weight", bert.pooler.dense.weight),
                                         g.weight("bert.pooler.dense.bias", bert.pooler.dense.bias)],
                                "bert.pooler.dense", modules=["bert.pooler.dense"], transB=1)], "bert.pooler/tanh")
    g.op("Gemm", [pooled, g.weight("classifier.weight", model.classifier.weight),
                  g.weight("classifier.bias", model.classifier.bias)], "classifier", modules=["classifier"], transB=1)
    g.nodes[-1].output[0] = "logits"
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", model.config.num_labels])]
    graph = helper.make_graph(g.nodes, "fincompress_bert", ints, out, g.inits, value_info=g.value_info)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="fincompress")
    proto.ir_version = 10
    return proto
