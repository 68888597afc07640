"""Small models and helpers for the robustness suite, all built in code (no binary fixtures).

Every builder returns a valid ``onnx.ModelProto`` (checked with ``full_check``) unless its name says it
is broken; tests write them into ``tmp_path`` themselves.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _w(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opsets=((("", OPSET)),), check: bool = True) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def conv_model(channels: int = 4) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv(W, B) -> Relu -> y: the smallest model with something to quantize."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    inits = [
        numpy_helper.from_array(_w((channels, 3, 3, 3)), "W"),
        numpy_helper.from_array(_w((channels,), 1), "B"),
    ]
    return _model(
        nodes,
        [_vi("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [_vi("y", TensorProto.FLOAT, [1, channels, 8, 8])],
        inits,
    )


def two_input_model() -> onnx.ModelProto:
    """a[1,4] @ W + b[1,4] -> y: a model whose data must name two inputs."""
    nodes = [
        helper.make_node("MatMul", ["a", "W"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["y"], name="add"),
    ]
    return _model(
        nodes,
        [_vi("a", TensorProto.FLOAT, [1, 4]), _vi("b", TensorProto.FLOAT, [1, 4])],
        [_vi("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(_w((4, 4)), "W")],
    )


def int_only_model() -> onnx.ModelProto:
    """int64 in, int64 out, no float tensor anywhere."""
    nodes = [
        helper.make_node("Add", ["x", "x"], ["s"], name="add"),
        helper.make_node("Mul", ["s", "x"], ["y"], name="mul"),
    ]
    return _model(nodes, [_vi("x", TensorProto.INT64, [1, 4])], [_vi("y", TensorProto.INT64, [1, 4])])


def embedding_model(vocab: int = 128) -> onnx.ModelProto:
    """int64 token ids -> Gather(embedding) -> MatMul: integer-only inputs, float inside."""
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "W"], ["y"], name="proj"),
    ]
    inits = [numpy_helper.from_array(_w((vocab, 8)), "E"), numpy_helper.from_array(_w((8, 4), 1), "W")]
    return _model(
        nodes, [_vi("ids", TensorProto.INT64, [1, 5])], [_vi("y", TensorProto.FLOAT, [1, 5, 4])], inits
    )


def dynamic_model() -> onnx.ModelProto:
    """Conv with dynamic batch, height and width: random data needs --dim H=.. --dim W=.."""
    model = conv_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("N", None, "H", "W"), strict=True):
        if name:
            dim.Clear()
            dim.dim_param = name
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


def shapeless_input_model() -> onnx.ModelProto:
    """An input that declares no shape at all."""
    model = conv_model()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


def constant_activation_model() -> onnx.ModelProto:
    """x * 0 feeds the Conv: its input activation is constant zero whatever the data (zero range)."""
    nodes = [
        helper.make_node("Mul", ["x", "zero"], ["z"], name="mul_zero"),
        helper.make_node("Conv", ["z", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(_w((4, 3, 3, 3)), "W"),
        numpy_helper.from_array(_w((4,), 1), "B"),
    ]
    return _model(
        nodes, [_vi("x", TensorProto.FLOAT, [1, 3, 8, 8])], [_vi("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits
    )


def custom_domain_model() -> onnx.ModelProto:
    """Conv followed by an op from a domain onnxruntime does not know."""
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("FancyNorm", ["c"], ["y"], name="fancy", domain="com.example.ops"),
    ]
    return _model(
        nodes,
        [_vi("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [_vi("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(_w((4, 3, 3, 3)), "W")],
        opsets=(("", OPSET), ("com.example.ops", 1)),
        check=False,
    )


def _conv_graph(name: str, inp: str, out: str, weight: str) -> onnx.GraphProto:
    """A subgraph with one Conv reading an outer-scope tensor and an outer-scope weight."""
    return helper.make_graph(
        [helper.make_node("Conv", [inp, weight], [out], name=f"{name}_conv", pads=[1, 1, 1, 1])],
        name,
        [],
        [_vi(out, TensorProto.FLOAT, [1, 4, 8, 8])],
    )


def if_model() -> onnx.ModelProto:
    """Conv outside, then If whose branches hold a Conv and a Relu reading outer tensors."""
    relu = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["e"], name="else_relu")],
        "else_b",
        [],
        [_vi("e", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
        helper.make_node("Greater", ["m", "half"], ["cond"], name="gt"),
        helper.make_node(
            "If",
            ["cond"],
            ["y"],
            name="if",
            then_branch=_conv_graph("then_b", "x", "t", "W"),
            else_branch=relu,
        ),
    ]
    inits = [
        numpy_helper.from_array(_w((4, 3, 3, 3)), "W"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    return _model(
        nodes, [_vi("x", TensorProto.FLOAT, [1, 3, 8, 8])], [_vi("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits
    )


def loop_model() -> onnx.ModelProto:
    """Conv, then a 3-trip Loop whose body multiplies the carried tensor by a MatMul weight."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("MatMul", ["v_in", "Wl"], ["mm"], name="body_matmul"),
            helper.make_node("Tanh", ["mm"], ["v_out"], name="body_tanh"),
        ],
        "body",
        [
            _vi("iter", TensorProto.INT64, []),
            _vi("cond_in", TensorProto.BOOL, []),
            _vi("v_in", TensorProto.FLOAT, [1, 4, 8, 8]),
        ],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("v_out", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Loop", ["trips", "", "c"], ["y"], name="loop", body=body),
    ]
    inits = [
        numpy_helper.from_array(_w((4, 3, 3, 3)), "W"),
        numpy_helper.from_array(_w((8, 8), 2) * 0.3, "Wl"),
        numpy_helper.from_array(np.array(3, np.int64), "trips"),
    ]
    return _model(
        nodes, [_vi("x", TensorProto.FLOAT, [1, 3, 8, 8])], [_vi("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits
    )


def scan_model() -> onnx.ModelProto:
    """A cumulative Scan over the sequence axis (body: MatMul + Add), then a MatMul outside."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "Ws"], ["p"], name="scan_matmul"),
            helper.make_node("Add", ["s_in", "p"], ["s_out"], name="scan_add"),
            helper.make_node("Identity", ["s_out"], ["y_t"], name="scan_out"),
        ],
        "scan_body",
        [_vi("s_in", TensorProto.FLOAT, [4]), _vi("x_t", TensorProto.FLOAT, [4])],
        [_vi("s_out", TensorProto.FLOAT, [4]), _vi("y_t", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("Scan", ["s0", "x"], ["s_last", "ys"], name="scan", body=body, num_scan_inputs=1),
        helper.make_node("MatMul", ["ys", "Wo"], ["y"], name="head"),
    ]
    inits = [
        numpy_helper.from_array(np.zeros(4, np.float32), "s0"),
        numpy_helper.from_array(_w((4, 4)), "Ws"),
        numpy_helper.from_array(_w((4, 2), 1), "Wo"),
    ]
    return _model(
        nodes,
        [_vi("x", TensorProto.FLOAT, [6, 4])],
        [_vi("y", TensorProto.FLOAT, [6, 2]), _vi("s_last", TensorProto.FLOAT, [4])],
        inits,
    )


def recurrent_model(op: str = "LSTM") -> onnx.ModelProto:
    """MatMul -> LSTM/GRU -> MatMul: the recurrent op must stay float, the MatMuls around it quantize."""
    hidden, gates = 4, 4 if op == "LSTM" else 3
    nodes = [
        helper.make_node("MatMul", ["x", "Win"], ["h0"], name="proj_in"),
        helper.make_node(op, ["h0", "Wr", "Rr"], ["seq"], name="rnn", hidden_size=hidden),
        helper.make_node("Reshape", ["seq", "shape"], ["flat"], name="flatten_seq"),
        helper.make_node("MatMul", ["flat", "Wout"], ["y"], name="proj_out"),
    ]
    inits = [
        numpy_helper.from_array(_w((3, 3)), "Win"),
        numpy_helper.from_array(_w((1, gates * hidden, 3), 1) * 0.5, "Wr"),
        numpy_helper.from_array(_w((1, gates * hidden, hidden), 2) * 0.5, "Rr"),
        numpy_helper.from_array(np.array([5, hidden], np.int64), "shape"),
        numpy_helper.from_array(_w((hidden, 2), 3), "Wout"),
    ]
    return _model(
        nodes, [_vi("x", TensorProto.FLOAT, [5, 1, 3])], [_vi("y", TensorProto.FLOAT, [5, 2])], inits
    )


def contradictory_shape_model() -> onnx.ModelProto:
    """Declares an output shape its Conv cannot produce: invalid ONNX that still parses and loads."""
    model = conv_model()
    model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 5
    return model


def save_with_external_data(model: onnx.ModelProto, path: Path, location: str = "weights.bin") -> None:
    """Save ``model`` with every initializer in one external file (threshold 0: even small ones)."""
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )


def point_external_data(path: Path, location: str) -> None:
    """Rewrite the external-data ``location`` of every tensor of the model file at ``path``."""
    model = onnx.load_model(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest): inputs must never change."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            full = Path(root) / name
            out[str(full.relative_to(folder))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def feed_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """One random feed matching the model's declared inputs (dynamic dims as 1, ints in [0, 100))."""
    rng = np.random.default_rng(seed)
    feed = {}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype.kind == "f":
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[vi.name] = rng.random(shape) < 0.5
        else:
            feed[vi.name] = rng.integers(0, 100, size=shape).astype(dtype)
    return feed


def residual_concat_model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv + shortcut Add, a Concat of two branches, MaxPool and a Gemm head: enough
    structure (residual rule, shared-scale groups, per-channel weights, biases) to test determinism."""
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["res"], name="residual"),
        helper.make_node("Conv", ["res", "W3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["res", "c3"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "Wg", "Bg"], ["y"], name="head", transB=1),
    ]
    inits = [
        numpy_helper.from_array(_w((4, 3, 3, 3)), "W1"),
        numpy_helper.from_array(_w((4,), 1), "B1"),
        numpy_helper.from_array(_w((4, 4, 3, 3), 2), "W2"),
        numpy_helper.from_array(_w((4,), 3), "B2"),
        numpy_helper.from_array(_w((4, 4, 3, 3), 4), "W3"),
        numpy_helper.from_array(_w((10, 128), 5), "Wg"),
        numpy_helper.from_array(_w((10,), 6), "Bg"),
    ]
    return _model(
        nodes, [_vi("x", TensorProto.FLOAT, [1, 3, 8, 8])], [_vi("y", TensorProto.FLOAT, [1, 10])], inits
    )


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def old_ir_model(opset: int = OPSET) -> onnx.ModelProto:
    """IR version 3 style: every initializer is also listed as a graph input (old exporters)."""
    model = residual_concat_model()
    model.ir_version = 3
    model.opset_import[0].version = opset
    for tensor in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return model


def unsorted_model() -> onnx.ModelProto:
    """Nodes stored in reverse order: valid once sorted, rejected by onnx's checker as given."""
    model = residual_concat_model()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    return model


def unnamed_nodes_model() -> onnx.ModelProto:
    """Half the nodes unnamed, the rest sharing one name: plans and reports address nodes by name."""
    model = residual_concat_model()
    for k, node in enumerate(model.graph.node):
        node.name = "" if k % 2 else "block"
    return model


def exposed_internal_model() -> onnx.ModelProto:
    """An intermediate tensor (a quantized op's input) is also a graph output, with no shape declared."""
    model = residual_concat_model()
    model.graph.output.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, None))
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


def shapeless_output_model() -> onnx.ModelProto:
    """A Loop whose graph output declares no shape: onnxruntime runs it, onnx's checker refuses it."""
    model = loop_model()
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model
