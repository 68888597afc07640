"""Round trip between ``onnx.ModelProto`` and ``gs.Graph`` for the preprocessing passes.

onnx-graphsurgeon is the one graph library inside the package, but its import/export loses a few
model-level fields (metadata_props, doc_string, model_version, domain) and it drops graph inputs that
are also initializers (old exporters list every weight as an input). Passes must hand back a model
whose public interface (input and output names) is the one they received, so this module restores
those fields after every export.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import onnx
import onnx_graphsurgeon as gs

from onnxq.errors import UnsupportedModelError
from onnxq.graph.export import export_onnx

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_gs() -> Iterator[None]:
    """Silence onnx-graphsurgeon's own logger, which prints to stdout (library code must not)."""
    with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.ERROR):
        yield


def is_default_domain(node: gs.Node) -> bool:
    """graphsurgeon reports the default ONNX domain as None."""
    return node.domain in (None, "", "ai.onnx")


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import ``model`` into a graph; the graph must be toposorted before folding, so it is here.

    A graph that cannot be ordered (a cycle) is the model's fault: UnsupportedModelError, not a crash.
    """
    with quiet_gs():
        graph = gs.import_onnx(model)
        try:
            graph.toposort()
        except gs.util.exception.OnnxGraphSurgeonException as exc:
            raise UnsupportedModelError(
                f"the graph cannot be put in execution order ({str(exc).strip().splitlines()[0]}): "
                "fix the model or re-export it"
            ) from None
    return graph


def to_model(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` and restore what graphsurgeon drops, taking it from ``like``."""
    with quiet_gs():
        model = export_onnx(graph, do_type_check=False)
    model.ir_version = like.ir_version
    model.producer_name = like.producer_name
    model.producer_version = like.producer_version
    model.domain = like.domain
    model.model_version = like.model_version
    model.doc_string = like.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    _merge_opsets(model, like)
    _restore_inputs(model, like)
    return model


def _merge_opsets(model: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Keep every opset import of ``like`` (graphsurgeon only keeps the domains nodes still use)."""
    have = {op.domain for op in model.opset_import}
    for op in like.opset_import:
        if op.domain not in have:
            model.opset_import.append(op)


def _restore_inputs(model: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Put back graph inputs that are also initializers, in their original order."""
    exported = {vi.name: vi for vi in model.graph.input}
    initializers = {t.name for t in model.graph.initializer}
    restored = []
    for vi in like.graph.input:
        if vi.name in exported:
            restored.append(exported.pop(vi.name))
        elif vi.name in initializers:
            restored.append(vi)
        else:
            logger.debug("graph input %r (an initializer) is no longer used and was removed", vi.name)
    restored.extend(exported.values())
    del model.graph.input[:]
    model.graph.input.extend(restored)
