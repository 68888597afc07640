"""Golden placement with symbolic dims: shapes are compared by what is known, never by symbolic names.

Shape inference names every dim it cannot follow afresh (EfficientNet-Lite0 exported with Pad nodes:
the residual Add read ``[unk__26,24,56,56]`` and ``[unk__16,24,56,56]``), and the residual rule compared
names: all 9 residual Adds stayed float, 50 nodes quantized instead of 59.
"""

from __future__ import annotations

import onnx
import pytest

from onnxq.config import QuantConfig
from onnxq.graph.query import same_dim, same_shape
from onnxq.placement import plan
from onnxq.records import Role
from onnxq.testing import model_from_text

RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,8,8,8] x) => (float[N,8,8,8] y) {
  a = Conv <pads=[1,1,1,1]> (x, W1)
  r = Relu (a)
  b = Conv <pads=[1,1,1,1]> (r, W2)
  s = Relu (x)
  y = Add (b, s)
}
"""
WEIGHTS = {"W1": (8, 8, 3, 3), "W2": (8, 8, 3, 3)}


def _batch(model: onnx.ModelProto, tensor: str, name: str | None) -> None:
    """Give ``tensor``'s batch dim the symbolic ``name`` (None: an unknown dim, neither size nor name)."""
    infos = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    dim = next(v for v in infos if v.name == tensor).type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    if name is not None:
        dim.dim_param = name


def _residual(shortcut_batch: str | None, branch_batch: str | None) -> onnx.ModelProto:
    m = model_from_text(RESIDUAL, weights=WEIGHTS)
    _batch(m, "s", shortcut_batch)
    _batch(m, "b", branch_batch)
    return m


@pytest.mark.parametrize("target", ["tensorrt", "ort-cpu"])
@pytest.mark.parametrize("names", [("unk__16", "unk__26"), ("N", None), (None, None)],
                         ids=["different-names", "name-vs-unknown", "both-unknown"])
def test_residual_add_with_differently_named_batch_dims_is_placed_as_with_equal_names(target, names):
    config = QuantConfig(target=target)
    want = plan(_residual("N", "N"), config)
    got = plan(_residual(*names), config)
    assert got == want
    if target == "tensorrt":
        add = next(n for n in got.quantized_nodes if n.startswith("Add"))
        shortcut = got.spec_for("s", Role.ACTIVATION)
        assert shortcut is not None and shortcut.rule == "residual-add-shortcut"
        assert (add, 1) in shortcut.consumers and got.spec_for("b") is None  # b: the branch TensorRT fuses


# A Conv output plus a per-channel term computed from the input: [N,8,H,W] + [N,8,1,1] is a broadcast,
# whatever H and W are, so it is no residual even though every dim of the big side is symbolic.
BROADCAST = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,8,H,W] x) => (float[N,8,H,W] y) {
  b = Conv <pads=[1,1,1,1]> (x, W1)
  p = GlobalAveragePool (x)
  c = Conv (p, W2)
  y = Add (b, c)
}
"""


def test_known_one_against_a_symbolic_dim_is_a_broadcast_not_a_residual():
    m = model_from_text(BROADCAST, weights={"W1": (8, 8, 3, 3), "W2": (8, 8, 1, 1)})
    p = plan(m)
    add = next(n.name for n in m.graph.node if n.op_type == "Add")
    assert add not in p.quantized_nodes
    assert {s.rule for s in p.specs} == {"weighted-op-input"}


def test_same_dim_and_same_shape_compare_known_sizes_only():
    assert same_dim(8, 8) and not same_dim(8, 4)
    assert same_dim("unk__26", "unk__16") and same_dim("N", None) and same_dim(None, None)
    assert same_dim("N", 8) and same_dim(None, 8)
    assert not same_dim("H", 1) and not same_dim(1, None)  # a known 1 may be a broadcast
    assert same_dim(1, 1)
    assert same_shape(["unk__26", 24, 56, 56], ["unk__16", 24, 56, 56])
    assert same_shape([-1, 16, "unk__12", "unk__13"], [-1, 16, "unk__18", "unk__19"])  # -1: unknown
    assert not same_shape(["N", 8, "H", "W"], ["N", 8, 1, 1])
    assert not same_shape(["N", 8, 4, 4], [8, 4, 4])  # rank broadcast
    assert same_shape(None, ["N", 8]) and same_shape([], [])
