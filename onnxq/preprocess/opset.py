"""Opset upgrade: bring the default ONNX domain to at least opset 13.

Why: per-channel ``QuantizeLinear``/``DequantizeLinear`` (one scale per output channel of a weight)
need the ``axis`` attribute, which those ops only have from opset 13. A model exported at opset 11
(YOLOX, many torchvision exports) can only be quantized per-tensor until it is upgraded, and per-tensor
weight quantization loses several points of accuracy on depthwise convolutions.

How: ``onnx.version_converter`` rewrites the ops whose signature changed (Upsample -> Resize, Split
and Squeeze attributes -> inputs, ...). The converter serializes the model, so it cannot take a model
over the 2 GB protobuf limit, and copying every weight through it is waste: weights never change
during an opset upgrade. Large initializers are therefore handed to the converter as external-data
stubs and put back by name afterwards. Small tensors (shapes, axes, scales) stay in place in case an
adapter reads them.

After converting, every default-domain node is checked against the schema at the new opset (the
converter silently keeps ops it has no adapter for, e.g. ``Scatter``, deprecated since opset 11), and
the model goes through ``onnx.checker`` when it fits in 2 GB. ``ir_version`` is raised only as far as
the new opset requires (7 for opset 13), which every onnxruntime from 1.6 to 1.32 accepts.
"""

from __future__ import annotations

import logging
import re

import onnx
from onnx import helper, version_converter

from onnxq.errors import UnsupportedModelError
from onnxq.graph.size import tensor_bytes
from onnxq.graph.usage import all_nodes
from onnxq.preprocess import shapes

logger = logging.getLogger(__name__)

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
_DETACH_BYTES = 4096
_DETACHED_MARK = "__onnxq_detached_during_opset_upgrade__"
_FIX = "re-export the model at opset >= {target} (e.g. torch.onnx.export(..., opset_version={target}))"


def default_opset(model: onnx.ModelProto) -> int | None:
    """The opset of the default ONNX domain, or None when the model does not import it."""
    versions = [op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    return max(versions) if versions else None


def upgrade_opset(model: onnx.ModelProto, min_opset: int = 13) -> onnx.ModelProto:
    """Return ``model`` converted to ``min_opset`` when its default-domain opset is lower.

    Models already at ``min_opset`` or above are returned as they are (same object, not modified).
    Raises UnsupportedModelError naming the op and the fix when the conversion fails.
    """
    current = default_opset(model)
    if current is None or current >= min_opset:
        return model
    light, originals = _detached_copy(model)
    try:
        converted = version_converter.convert_version(light, min_opset)
    except Exception as exc:  # the converter raises bare RuntimeError/IndexError from C++
        raise UnsupportedModelError(_failure_message(model, current, min_opset, str(exc))) from exc
    _reattach(converted, originals)
    required = helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(model.ir_version, required)
    _check_schemas(converted, current, min_opset)
    _check_model(converted, model, current, min_opset)
    logger.info("opset %d -> %d", current, min_opset)
    return converted


def _detached_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """Copy ``model`` with large in-memory initializers replaced by external-data stubs."""
    graph = onnx.GraphProto()
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(graph, field.name, value)
    originals: dict[str, onnx.TensorProto] = {}
    for tensor in model.graph.initializer:
        if tensor_bytes(tensor) <= _DETACH_BYTES:  # 0 when external; ByteSize() would serialize the tensor
            graph.initializer.append(tensor)
            continue
        originals[tensor.name] = tensor
        stub = graph.initializer.add()
        stub.name = tensor.name
        stub.data_type = tensor.data_type
        stub.dims.extend(tensor.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=_DETACHED_MARK)
    light = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(light, field.name, value)
    light.graph.CopyFrom(graph)
    return light, originals


def _copy_field(target: object, name: str, value: object) -> None:
    if hasattr(value, "extend"):  # repeated field
        getattr(target, name).extend(value)
    elif hasattr(value, "CopyFrom"):  # message field
        getattr(target, name).CopyFrom(value)
    else:
        setattr(target, name, value)


def _reattach(converted: onnx.ModelProto, originals: dict[str, onnx.TensorProto]) -> None:
    for tensor in converted.graph.initializer:
        marked = any(e.key == "location" and e.value == _DETACHED_MARK for e in tensor.external_data)
        if not marked:
            continue
        if tensor.name not in originals:
            raise UnsupportedModelError(
                f"opset upgrade renamed initializer {tensor.name!r}; re-export the model at opset >= 13"
            )
        tensor.CopyFrom(originals[tensor.name])



def _failure_message(model: onnx.ModelProto, current: int, target: int, error: str) -> str:
    ops = sorted({n.op_type for n in all_nodes(model.graph)})
    named = [op for op in ops if re.search(rf"\b(adapt_)?{re.escape(op)}\b", error, re.IGNORECASE)]
    if not named:
        named = _culprits(model, target)
    op_part = f" at op {', '.join(named)}" if named else ""
    first_line = error.strip().splitlines()[0] if error.strip() else "unknown error"
    first_line = first_line.split("failed:", 1)[-1].strip()  # drop the C++ assertion prefix
    return (
        f"cannot upgrade the model from opset {current} to {target}{op_part} ({first_line}); "
        + _FIX.format(target=target)
    )


def _culprits(model: onnx.ModelProto, target: int) -> list[str]:
    """Op types whose nodes fail to convert on their own (only run after a failed conversion)."""
    typed = shapes.infer_shapes(model).graph
    types = {vi.name: vi for vi in [*typed.input, *typed.value_info, *typed.output]}
    for tensor in model.graph.initializer:
        typed_init = helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
        types.setdefault(tensor.name, typed_init)
    failing = []
    for op in sorted({n.op_type for n in model.graph.node if n.domain in DEFAULT_DOMAINS}):
        nodes = [n for n in model.graph.node if n.op_type == op and n.domain in DEFAULT_DOMAINS]
        names = list(dict.fromkeys(i for n in nodes for i in n.input if i))
        untyped = onnx.TensorProto.FLOAT
        inputs = [types.get(name) or helper.make_tensor_value_info(name, untyped, None) for name in names]
        outputs = [helper.make_empty_tensor_value_info(o) for n in nodes for o in n.output if o]
        probe = helper.make_model(
            helper.make_graph(nodes, "probe", inputs, outputs), opset_imports=list(model.opset_import)
        )
        try:
            version_converter.convert_version(probe, target)
        except Exception:  # noqa: BLE001 - any failure marks the op
            failing.append(op)
    return failing


def _check_schemas(model: onnx.ModelProto, current: int, target: int) -> None:
    """Reject default-domain ops that do not exist (or are deprecated) at ``target``."""
    bad = set()
    for node in all_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, target, "")
        except onnx.defs.SchemaError:
            bad.add(node.op_type)
            continue
        if schema.deprecated:
            bad.add(node.op_type)
    if bad:
        ops = ", ".join(sorted(bad))
        raise UnsupportedModelError(
            f"op {ops} has no opset-{target} form (onnx's converter cannot upgrade it from opset "
            f"{current}); " + _FIX.format(target=target)
        )


def _check_model(converted: onnx.ModelProto, original: onnx.ModelProto, current: int, target: int) -> None:
    """Run onnx.checker on the result; blame the upgrade only if the original model was valid."""
    if not shapes.fits_in_memory_api(converted):
        logger.info("model over 2 GB: onnx.checker skipped after the opset upgrade")
        return
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as exc:
        try:
            onnx.checker.check_model(original)
        except onnx.checker.ValidationError:
            logger.warning("model fails onnx.checker before and after the opset upgrade: %s", exc)
            return
        raise UnsupportedModelError(
            _failure_message(original, current, target, f"invalid result: {exc}")
        ) from exc
