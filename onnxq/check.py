"""Validating a model with onnx's full checker and onnxruntime, and saving only a model that passes.

Beside :mod:`onnxq.runtime` because it runs onnxruntime (one sample, outputs must be finite); files are
written by :mod:`onnxq.io`, which stays below the runtime. ``save_model`` validates first and then
writes atomically (:func:`onnxq.io.write_model`), so an invalid model never reaches the disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxq import runtime
from onnxq.errors import UnsupportedModelError, ValidationError
from onnxq.graph.light import weights_as_inputs
from onnxq.graph.size import fits_protobuf, tensor_bytes
from onnxq.io import check_output_path, error_line, save_external, write_model


@dataclass(frozen=True)
class Checked:
    """What :func:`check_model` established about a model."""

    outputs: list[np.ndarray] | None  # of running the feed (None without one): callers need not run it again
    data: bytes | None  # the deterministic serialization checked (None over 2 GB), for save_model


def check_model(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> Checked:
    """Full onnx check, then onnxruntime loads the model and runs ``feed``; outputs must be finite."""
    problem, outputs = _validate(model, feed, load=True)
    if problem is not None:
        raise ValidationError(f"{problem} in the model onnxq produced; please report this bug")
    return Checked(outputs, model.SerializeToString(deterministic=True) if fits_protobuf(model) else None)


def check_input_model(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> None:
    """The checks of :func:`check_model` on a float model: an UnsupportedModelError when it fails them.

    Called after a quantized model failed validation: when the float model fails the same checks, the
    fault is in the input (declared shapes that contradict the ops, an op onnxruntime cannot run), which
    the user must fix; it is not an onnxq bug.
    """
    problem = validation_problem(model, feed)
    if problem is not None:
        raise UnsupportedModelError(
            f"the input model itself fails validation: {problem}; fix the model or re-export it "
            "(onnx.checker.check_model(path, full_check=True) shows the problem)"
        )


def validation_problem(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> str | None:
    """What fails in :func:`check_model` (one line), or None when the model passes."""
    return _validate(model, feed, load=feed is not None)[0]


CHECKER_INPUT_MIN_BYTES = 1 << 10  # initializers the checker sees as declared inputs (see _checker_bytes)
_NUMERIC = frozenset(t for t in onnx.TensorProto.DataType.values() if t not in (
    onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING))


def _validate(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None, load: bool
) -> tuple[str | None, list[np.ndarray] | None]:
    """(what fails or None, the outputs of running ``feed`` or None); ``load``: onnxruntime loads the
    model even without a feed (a model onnxq writes must load, whether or not there is data to run)."""
    # onnx's own message for this names neither the tensor nor the fix
    for vi in (*model.graph.input, *model.graph.output):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            return (f"graph {'input' if vi in model.graph.input else 'output'} {vi.name!r} declares no shape "
                    "(onnx requires one; unknown dims may be named, e.g. 'batch')"), None
    if fits_protobuf(model):
        return _problem(_checker_bytes(model), model, feed, load)
    with tempfile.TemporaryDirectory(prefix="onnxq-check-") as tmp:  # over 2 GB: check and run from a file
        path = os.path.join(tmp, "model.onnx")
        save_external(model, path, "model.onnx.data")
        return _problem(path, path, feed, load)


def _checker_bytes(model: onnx.ModelProto) -> bytes:
    """What onnx's full checker needs of ``model``: its weights declared as inputs, without their data.

    Why: the checker takes bytes, and serializing the weights only for it cost 0.2 s per check of a 90 MB
    transformer (35 ms this way). What it read of them besides dtype and dims is whether their data has
    the size these declare; a weight whose data does not stays an initializer, for the checker to name.
    """
    def moved(t: onnx.TensorProto) -> bool:
        size = tensor_bytes(t)
        return t.data_type in _NUMERIC and t.HasField("raw_data") and size >= CHECKER_INPUT_MIN_BYTES \
            and len(t.raw_data) == size  # (copies the data: 30 ms for 90 MB, a serialization took 150)

    return weights_as_inputs(model, moved).SerializeToString()


def _problem(
    checked: bytes | str, model: onnx.ModelProto | str, feed: Mapping[str, np.ndarray] | None, load: bool
) -> tuple[str | None, list[np.ndarray] | None]:
    """The checker on ``checked`` (the model's bytes or path), onnxruntime on ``model`` (the proto: its
    weights reach onnxruntime without another serialization, see runtime.make_session; or the path)."""
    try:
        onnx.checker.check_model(checked, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return f"onnx's checker fails ({error_line(exc)})", None
    if feed is None and not load:
        return None, None
    try:
        session = runtime.make_session(model)
        if feed is None:
            return None, None
        outputs = runtime.run(session, feed)
    except UnsupportedModelError as exc:
        return f"onnxruntime cannot run it ({exc})", None
    for name, value in zip(runtime.output_names(session), outputs):
        if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(np.isfinite(value)):
            return f"output {name!r} is not finite", None
    return None, list(outputs)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    feed: Mapping[str, np.ndarray] | None = None,
    source: str | os.PathLike | None = None,
    checked: bytes | None = None,
) -> Path:
    """Validate ``model`` and write it atomically to ``path``; returns the path written.

    ``checked``: the deterministic serialization of a model that already passed :func:`check_model` with
    this ``feed``; when ``model`` still serializes to those bytes, the check is not repeated (a changed
    model is checked again). Models over 2 GB are written with their tensors in ``<name>.data`` beside
    the model, and always checked.
    """
    path = Path(path)
    check_output_path(path, source)  # before the check: a bad path is refused without the work
    data = model.SerializeToString(deterministic=True) if fits_protobuf(model) else None
    if data is None or data != checked:
        check_model(model, feed)
    return write_model(model, path, data=data)
