"""Fold bias corrections into the float biases of weighted ops (a graph change, so it lives in rewrite/).

Runs on the float graph before ``insert_qdq``: the plan names tensors and (node, input) edges, and this
pass keeps every name the plan refers to, so Q/DQ placement is unchanged. Biases stay float (the
TensorRT rule; for the onnxruntime CPU target ``insert_qdq`` quantizes the corrected bias afterwards).

* A node with a constant bias used only by it: the values change, the name stays.
* A Conv without bias, or a Gemm without C: a new bias initializer is added as input 2.
* A MatMul: the bias lives in a following ``Add`` with a constant operand of size N (the transformer
  pattern); that constant is adjusted. A MatMul without one is left alone (adding an Add would change
  what TensorRT fuses), and so is a bias shared by several nodes or planned as an int32 input.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.calibrate.bias_correction import CORRECTABLE_OPS, InputMoments, corrected_bias, output_shift
from onnxq.formats import fake_quantize_as
from onnxq.graph.names import UniqueNames
from onnxq.graph.query import GraphIndex
from onnxq.graph.scopes import all_nodes, all_tensors, node_scopes
from onnxq.preprocess._gs import quiet_gs, to_model
from onnxq.records import QuantParams, QuantPlan

log = logging.getLogger(__name__)


def output_shifts(
    index: GraphIndex,
    plan: QuantPlan,
    params: Mapping[str, QuantParams],
    means: Mapping[str, InputMoments],
) -> dict[str, np.ndarray]:
    """Expected output error per output channel of every planned weight consumer that has input moments
    (the measurement: node name -> shift). The weights are the float values the plan carries.

    The error covers the weight's quantization, and the input's when the moments carry ``mean_q``.
    """
    shifts: dict[str, np.ndarray] = {}
    if not means:
        return shifts
    nodes = all_nodes(index.graph)  # bodies too (their moments come through routes)
    tensors: dict[str, gs.Tensor] | None = None
    for spec in plan.weights():
        w = plan.values.get(spec.tensor)
        if w is None:
            if spec.tensor not in index.tensors and tensors is None:
                tensors = all_tensors(index.graph)
            w = index.constant_value(index.tensors.get(spec.tensor) or tensors[spec.tensor])
        w_q = fake_quantize_as(w, params[spec.key])  # as QuantizeLinear in the graph: the full grid
        for node_name, idx in spec.consumers:
            node = nodes.get(node_name)
            if node is None or idx != 1 or node.op not in CORRECTABLE_OPS or node_name not in means:
                continue
            shifts[node_name] = output_shift(node.op, node.attrs, w, w_q, means[node_name])
    return shifts


def correct_biases(
    model: onnx.ModelProto,
    plan: QuantPlan,
    params: Mapping[str, QuantParams],
    means: Mapping[str, InputMoments],
) -> onnx.ModelProto:
    """A new float model whose biases cancel the mean output error of the planned weight quantization.

    ``means`` are the input moments of each weighted node (``analysis.activation_means.input_moments``);
    nodes without them are left alone.
    """
    with quiet_gs():
        graph = gs.import_onnx(model)
    apply_bias_shifts(graph, output_shifts(GraphIndex.build(graph), plan, params, means), plan)
    return to_model(graph, model)


def apply_bias_shifts(graph: gs.Graph, shifts: Mapping[str, np.ndarray], plan: QuantPlan | None = None) -> None:
    """Lower node ``n``'s output bias by ``shifts[n]`` (one value per channel), in ``graph`` (in place)."""
    if not shifts:
        return
    planned_biases = {s.tensor for s in plan.biases()} if plan is not None else set()
    scope_of = node_scopes(graph)  # a node of a body is corrected in its body
    nodes = all_nodes(graph)
    # readers model-wide: an outer initializer may be read in several bodies (one gs object for all)
    readers = Counter(t.name for n in nodes.values() for t in n.inputs if t.name)
    indexes: dict[int, GraphIndex] = {}
    done = 0
    for name, shift in shifts.items():
        scope = scope_of.get(name)
        if scope is None:
            raise KeyError(f"bias correction for node {name!r}, which is not in the graph")
        if not np.any(shift):
            continue
        index = indexes.setdefault(id(scope.graph), GraphIndex.build(scope.graph))
        node = nodes[name]
        if node.op == "MatMul":
            done += _shift_matmul_add(index, node, shift)
        else:
            done += _shift_bias_input(graph, index, node, shift, planned_biases, readers)
    log.debug("bias correction changed %d of %d biases", done, len(shifts))
    graph.cleanup(remove_unused_graph_inputs=False)  # a replaced Constant-node bias has no reader left


def _shift_bias_input(
    graph: gs.Graph, index: GraphIndex, node: gs.Node, shift: np.ndarray, planned: set[str],
    readers: Counter[str],
) -> int:
    beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
    channels = shift.shape[0]
    if len(node.inputs) > 2 and node.inputs[2].name:
        bias = node.inputs[2]
        value = index.constant_value(bias)
        if value is None or value.size != channels or beta == 0.0:
            log.info("bias of %s is not a constant of %d values; not corrected", node.name, channels)
            return 0
        shared = readers[bias.name] > 1
        if shared and bias.name in planned:
            log.info("bias %s is shared and planned as int32; %s not corrected", bias.name, node.name)
            return 0
        new_value = corrected_bias(value, shift, scale=beta)
        producer = index.producer.get(bias.name)
        if not shared and isinstance(bias, gs.Constant):
            bias.values = new_value
        elif not shared and producer is not None and producer.op == "Constant":
            # a Constant node (bodies keep theirs: folding does not reach them) gives way to a constant of
            # the same name, the name the plan holds (an int32 bias on ort-cpu). Its attribute is not changed
            # in place: graph copies (auto's candidates) share attributes, and every candidate would add
            # its shift to the same value
            producer.outputs.clear()
            node.inputs[2] = gs.Constant(bias.name, new_value)
        else:
            node.inputs[2] = gs.Constant(_fresh(graph, f"{node.name}_bias_corrected"), new_value)
        return 1
    if node.op == "Gemm":
        node.attrs["beta"] = 1.0  # C was absent, so beta multiplied nothing; the new C enters as is
    dtype = index.constant_value(node.inputs[1]).dtype
    constant = gs.Constant(_fresh(graph, f"{node.name}_bias"), corrected_bias(None, shift).astype(dtype))
    if len(node.inputs) == 2:
        node.inputs.append(constant)
    else:
        node.inputs[2] = constant  # an empty optional input
    return 1


def _shift_matmul_add(index: GraphIndex, node: gs.Node, shift: np.ndarray) -> int:
    users = index.consumers.get(node.outputs[0].name, [])
    if len(users) != 1 or users[0][0].op != "Add" or index.is_graph_output(node.outputs[0].name):
        log.info("MatMul %s has no bias Add to absorb its correction; not corrected", node.name)
        return 0
    add, idx = users[0]
    other = add.inputs[1 - idx]
    value = index.constant_value(other) if index.is_constant(other) else None
    used_once = len(index.consumers.get(other.name, [])) == 1
    if value is None or value.size != shift.shape[0] or not isinstance(other, gs.Constant) or not used_once:
        log.info("the Add after MatMul %s has no private constant bias of size %d; not corrected",
                 node.name, shift.shape[0])
        return 0
    other.values = corrected_bias(value, shift)
    return 1


def _fresh(graph: gs.Graph, base: str) -> str:
    # The graph's tensor names as they are now (new constants join it as they are attached); a bias
    # every reader of which was replaced already has left it, and its name is free again.
    return UniqueNames.of_graph(graph, node_names=False).new(base)
