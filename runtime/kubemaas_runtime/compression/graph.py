"""Small ONNX graph rewrites that widen what ONNX Runtime's quantizers cover."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite ``Gemm(A, W[, C])`` with a constant W as ``MatMul(A, W') + C``, in place.

    ``quantize_dynamic`` quantizes MatMul but not Gemm (its IntegerOps registry has no
    Gemm), and torch exports every 2-D ``nn.Linear`` as Gemm, so without this an MLP gets
    no int8 weights at all. Only the plain form is rewritten (alpha = beta = 1, no transA);
    returns how many nodes were rewritten.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = _attrs(node)
        plain = (
            node.op_type == "Gemm"
            and node.domain in ("", "ai.onnx")
            and len(node.input) >= 2
            and node.input[1] in inits
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and attrs.get("transA", 0) == 0
        )
        if not plain:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            array = numpy_helper.to_array(inits[weight])
            weight = f"{node.input[1]}_T_{rewritten}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array.T), weight))
        name = node.name or f"gemm_{rewritten}"
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        out = node.output[0]
        product = f"{out}_matmul" if bias else out
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{name}_MatMul"))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [out], name=f"{name}_Add"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        _drop_unused_initializers(model)
    return rewritten


def _used_names(graph: onnx.GraphProto) -> set[str]:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for node in graph.node:  # If/Loop/Scan bodies may read outer initializers
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else []:
                used |= _used_names(sub)
    return used


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = _used_names(model.graph)
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
