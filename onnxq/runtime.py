"""The only module that imports onnxruntime: sessions, options and the run loop.

Keeping onnxruntime behind this door lets the rest of onnxq stay pure (graph edits, math) and lets
tests and users swap providers in one place.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from onnxq.errors import ConfigError, SessionLoadError, UnsupportedModelError
from onnxq.graph.light import light_copy
from onnxq.graph.size import fits_protobuf, tensor_bytes
from onnxq.graph.usage import all_nodes, read_names
from onnxq.io import save_external

log = logging.getLogger(__name__)

# FATAL only: onnxruntime's errors reach the user as one-line OnnxqErrors; its own ERROR log lines would
# print a second, coloured copy on stderr.
ort.set_default_logger_severity(4)


def session_options(
    *, optimize: bool = False, threads: int | None = None, fake_quant: bool = False, spinning: bool = True
) -> ort.SessionOptions:
    """Options for a deterministic CPU session.

    Calibration runs with graph optimizations off (``optimize=False``) so that every planned tensor
    still exists by its name and holds exactly the float model's values. ``fake_quant=True`` keeps
    onnxruntime from fusing Q/DQ into integer kernels (whose x86 int8 path without VNNI saturates), so
    Q/DQ run as fake quantization while float kernels may still be optimized (sensitivity analysis).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.intra_op_num_threads = env_threads() if threads is None else threads
    opts.log_severity_level = 4
    if fake_quant:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if not spinning:  # idle worker threads sleep instead of spinning against other work of ours
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def env_threads() -> int:
    """onnxruntime threads from ``ONNXQ_THREADS`` (0, onnxruntime's choice, when unset or empty)."""
    value = os.environ.get("ONNXQ_THREADS", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ConfigError(
            f"ONNXQ_THREADS={value!r} is not a number of threads; set a whole number >= 1 or unset it"
        )
    return int(value)


def make_session(
    model: onnx.ModelProto | bytes | str,
    *,
    optimize: bool = False,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    fake_quant: bool = False,
    spinning: bool = True,
) -> ort.InferenceSession:
    """An onnxruntime session; a model onnxruntime rejects becomes a SessionLoadError (an
    UnsupportedModelError: the user's model is blamed unless the caller knows better, see
    :func:`onnxq.api.onnxq_graphs`).

    A ModelProto over 2 GB cannot be serialized: it is written with external data to a temporary folder,
    loaded from there (onnxruntime reads the tensors in) and the folder is removed.
    """
    if isinstance(model, onnx.ModelProto) and not fits_protobuf(model):
        with tempfile.TemporaryDirectory(prefix="onnxq-session-", ignore_cleanup_errors=True) as tmp:
            path = os.path.join(tmp, "model.onnx")
            save_external(model, path, "model.onnx.data")
            return make_session(path, optimize=optimize, threads=threads, providers=providers,
                                fake_quant=fake_quant, spinning=spinning)
    opts = session_options(optimize=optimize, threads=threads, fake_quant=fake_quant, spinning=spinning)
    payload, arrays = _light_bytes(model, opts) if isinstance(model, onnx.ModelProto) else (model, [])
    try:
        return ort.InferenceSession(payload, sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises several private exception types
        raise SessionLoadError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None
    finally:
        del arrays  # only now: ``opts`` points into them without holding them (freed earlier, it crashed)


IN_MEMORY_MIN_BYTES = 1 << 10  # smaller initializers (shapes, scales) stay in the serialized graph
_IN_MEMORY_DTYPES = frozenset(
    onnx.TensorProto.DataType.Value(name)
    for name in ("FLOAT", "DOUBLE", "FLOAT16", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64",
                 "UINT64", "BOOL")
)


def _light_bytes(model: onnx.ModelProto, opts: ort.SessionOptions) -> tuple[bytes, list[ort.OrtValue]]:
    """The serialized model without the data of its big initializers, which go to ``opts`` instead, and
    the arrays ``opts`` now points to: the caller keeps them alive until the session is built.

    Serializing the weights for onnxruntime, which parses them back, cost ~1.5 ns per byte: 0.14 s per
    session for MiniLM's 90 MB, and onnxq opens several sessions per model. Here each big initializer of
    the main graph becomes a stub with an external-data reference, and its values reach onnxruntime as an
    array through ``add_external_initializers`` (onnxruntime checks name, dims and dtype, and copies the
    data in before optimizing: the same session as from the full bytes). Dtypes numpy cannot hold
    (bfloat16, float8, int4) and subgraph initializers stay in the bytes.

    Only initializers the graph reads (a node input in any scope, or a graph output) go in memory:
    onnxruntime drops the others while resolving the graph, and a handed-over name it no longer has
    fails the load ("Failed to find existing initializer"). Unread ones stay in the bytes, where
    onnxruntime drops them as it would from any model.
    """
    read = read_names(model.graph)

    def in_memory(tensor: onnx.TensorProto) -> bool:
        return tensor.name in read and tensor.HasField("raw_data") and tensor.data_type in _IN_MEMORY_DTYPES \
            and tensor_bytes(tensor) >= IN_MEMORY_MIN_BYTES  # (len(raw_data) would copy the data)

    big = [t for t in model.graph.initializer if in_memory(t)]
    if not big:
        return model.SerializeToString(), []
    arrays = [ort.OrtValue.ortvalue_from_numpy(_array(t)) for t in big]
    opts.add_external_initializers([t.name for t in big], arrays)
    return light_copy(model, in_memory, "onnxq-in-memory").SerializeToString(), arrays


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        return onnx.numpy_helper.to_array(tensor)
    except ValueError:  # numpy cannot shape the data as declared: onnxruntime would refuse the model
        raise SessionLoadError(
            f"onnxruntime cannot load the model: initializer {tensor.name!r} holds {len(tensor.raw_data)} bytes "
            f"of data but its dims {list(tensor.dims)} and dtype need {tensor_bytes(tensor)}") from None


def load_problem(model: onnx.ModelProto | bytes | str) -> str | None:
    """Why onnxruntime cannot build a session on ``model`` (SessionLoadError's message), or None."""
    try:
        make_session(model)
    except SessionLoadError as exc:
        return str(exc)
    return None


def run(session: ort.InferenceSession, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None):
    """Run one feed; onnxruntime errors become UnsupportedModelError with onnxruntime's first line."""
    try:
        return session.run(list(outputs) if outputs is not None else None, dict(feed))
    except Exception as exc:
        raise UnsupportedModelError(
            f"onnxruntime failed to run the model: {_first_line(exc)}; check that the input data (values, "
            "shapes) is what the model expects"
        ) from None


def unknown_ops(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(node name, domain, op type) of every node, subgraphs included, in a non-standard domain that
    onnxruntime has no schema for and the model does not define as a local function.

    Checked before calibration so that a custom op fails with its name and domain up front, instead of
    as onnxruntime's load error after the work (or, with nothing to calibrate, at the final check).
    Returns [] when this onnxruntime build cannot list its schemas.
    """
    custom = [n for n in all_nodes(model.graph) if n.domain not in ("", "ai.onnx")]
    if not custom:  # (listing onnxruntime's schemas costs 10 ms)
        return []
    try:
        schemas = ort.capi._pybind_state.get_all_operator_schema()
    except Exception:  # a build without the schema registry: onnxruntime reports unknown ops itself
        return []
    known = {(s.domain, s.name) for s in schemas} | {(f.domain, f.name) for f in model.functions}
    return [(n.name, n.domain, n.op_type) for n in custom if (n.domain, n.op_type) not in known]


def require_known_ops(model: onnx.ModelProto) -> None:
    """UnsupportedModelError naming the first op onnxruntime cannot run (see :func:`unknown_ops`)."""
    unknown = unknown_ops(model)
    if unknown:
        name, domain, op = unknown[0]
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UnsupportedModelError(
            f"node {name!r} is op {op!r} of custom domain {domain!r}{more}, which onnxruntime does not know; "
            "onnxq runs the float model in onnxruntime to calibrate it: replace the op with standard ONNX "
            "ops "
            "or ship it as an ONNX function in the model"
        )


@functools.cache
def qdq_opset_supported(opset: int) -> bool:
    """Whether this onnxruntime runs int8 QuantizeLinear/DequantizeLinear at default-domain ``opset``
    (onnx may define a newer version of them than onnxruntime implements). A one-node probe: ~1 ms."""
    scale = onnx.numpy_helper.from_array(np.array(1.0, np.float32), "s")
    zero = onnx.numpy_helper.from_array(np.array(0, np.int8), "z")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq_probe", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], initializer=[scale, zero])
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    probe.ir_version = onnx.helper.find_min_ir_version_for(list(probe.opset_import), ignore_unknown=True)
    opts = session_options()  # outside the try: a bad ONNXQ_THREADS is the user's error, not the opset's
    try:
        ort.InferenceSession(probe.SerializeToString(), sess_options=opts,
                             providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal means "not at this opset"
        return False
    return True


def require_qdq_opset(model: onnx.ModelProto) -> None:
    """UnsupportedModelError when the model's opset is newer than onnxruntime's QuantizeLinear: the
    quantized model could not run (and onnxq validates every model it writes in onnxruntime)."""
    versions = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
    opset = max(versions) if versions else None
    if opset is None or opset < 10 or qdq_opset_supported(opset):
        return
    lower = next((v for v in range(opset - 1, 12, -1) if qdq_opset_supported(v)), 13)
    raise UnsupportedModelError(
        f"the model uses opset {opset}, but onnxruntime {ort.__version__} has no "
        f"QuantizeLinear/DequantizeLinear for it: re-export the model at opset {lower} or lower, or upgrade "
        "onnxruntime"
    )



def output_names(session: ort.InferenceSession) -> list[str]:
    return [o.name for o in session.get_outputs()]


def ort_version() -> str:
    return ort.__version__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    for candidate in text:
        if "Error" in candidate or "error" in candidate or "fail" in candidate:
            line = candidate
            break
    return " ".join(line.split())[:400]
