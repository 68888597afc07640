"""Reading and writing models: the only place (with the CLI) that touches model files.

``load_model`` never modifies the file it reads. ``save_model`` validates first (onnx full check,
onnxruntime loads and runs one sample, outputs finite) and then writes atomically: a temporary file in
the destination folder renamed over the target, so a failure or an interruption leaves no partial file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from onnxq import runtime
from onnxq.errors import ModelLoadError, OutputError, UnsupportedModelError, ValidationError
from onnxq.graph.size import PROTOBUF_LIMIT, fits_protobuf, tensor_bytes  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)



def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load and sanity-check a model; a ModelProto argument is deep-copied, never modified."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        _check_model_shape(model, "the model object")
        return model
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file {path} not found: check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a model file: pass the .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty: re-export the model")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ModelLoadError(f"{path} is not an ONNX model (protobuf parse failed: {exc}): re-export it") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from None
    _check_model_shape(model, str(path))
    _load_external_data(model, path)
    return model


def _check_model_shape(model: onnx.ModelProto, where: str) -> None:
    if not model.HasField("graph") or not model.graph.node or not model.opset_import or model.ir_version <= 0:
        raise ModelLoadError(
            f"{where} is not an ONNX model (no graph, nodes, opset or IR version): pass an exported .onnx model"
        )
    _check_single_assignment(model.graph, where)
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > newest:
            raise UnsupportedModelError(
                f"{where} uses opset {opset.version}, newer than this onnx/onnxruntime supports ({newest}): "
                f"re-export with opset <= {newest} or upgrade onnx and onnxruntime"
            )


def _check_single_assignment(graph: onnx.GraphProto, where: str) -> None:
    """Every tensor is written once (ONNX's SSA rule); a second writer makes the graph meaningless and
    crashes graph tools with a misleading "cycle" error, so it is refused here with the tensor's name."""
    written = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        for name in node.output:
            if not name:
                continue
            if name in written:
                raise ModelLoadError(
                    f"{where}: tensor {name!r} is written twice (node {node.name or node.op_type!r} and an "
                    "earlier node, graph input or initializer); ONNX requires one writer per tensor: fix or "
                    "re-export the model"
                )
            written.add(name)


def _external_tensors(model: onnx.ModelProto):
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if onnx.external_data_helper.uses_external_data(tensor):
            yield tensor


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.resolve().parent
    for tensor in _external_tensors(model):
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise ModelLoadError(
                f"tensor {tensor.name!r} stores its data at {location!r}, outside the model's folder: "
                "move the data file next to the model (onnxq refuses paths that leave the folder)"
            )
        if not target.exists():
            raise ModelLoadError(
                f"external data file {location!r} of tensor {tensor.name!r} not found next to {path.name}: "
                "copy it beside the model"
            )
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read external data of {path}: {_short(exc)}; the data file is damaged or does not "
            "belong to this model: copy the complete file beside it or re-export the model"
        ) from None


@dataclass(frozen=True)
class Checked:
    """What :func:`check_model` established about a model."""

    outputs: list[np.ndarray] | None  # of running the feed (None without one): callers need not run it again
    digest: str | None  # sha256 of the deterministic serialization checked (None over 2 GB), for save_model


def check_model(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> Checked:
    """Full onnx check, then onnxruntime loads the model and runs ``feed``; outputs must be finite."""
    problem, outputs, digest = _validate(model, feed, want_digest=True)
    if problem is not None:
        raise ValidationError(f"{problem} in the model onnxq produced; please report this bug")
    return Checked(outputs, digest)


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
    return _validate(model, feed)[0]


def _validate(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None, want_digest: bool = False
) -> tuple[str | None, list[np.ndarray] | None, str | None]:
    """(what fails or None, the outputs of running ``feed`` or None, the digest when wanted and known)."""
    # onnx's own message for this names neither the tensor nor the fix
    for vi in (*model.graph.input, *model.graph.output):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            return (f"graph {'input' if vi in model.graph.input else 'output'} {vi.name!r} declares no shape "
                    "(onnx requires one; unknown dims may be named, e.g. 'batch')"), None, None
    if fits_protobuf(model):
        data = model.SerializeToString(deterministic=True)  # once, for the checker and the digest (~30 ms)
        problem, outputs = _problem(data, model, feed)
        return problem, outputs, hashlib.sha256(data).hexdigest() if want_digest and problem is None else None
    with tempfile.TemporaryDirectory(prefix="onnxq-check-") as tmp:  # over 2 GB: check and run from a file
        path = os.path.join(tmp, "model.onnx")
        save_external(model, path, "model.onnx.data")
        return (*_problem(path, path, feed), None)


def _problem(
    checked: bytes | str, model: onnx.ModelProto | str, feed: Mapping[str, np.ndarray] | None
) -> tuple[str | None, list[np.ndarray] | None]:
    """The checker on ``checked`` (the model's bytes or path), onnxruntime on ``model`` (the proto: its
    weights reach onnxruntime without another serialization, see runtime.make_session; or the path)."""
    try:
        onnx.checker.check_model(checked, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return f"onnx's checker fails ({_short(exc)})", None
    if feed is None:
        return None, None
    try:
        session = runtime.make_session(model)
        outputs = runtime.run(session, feed)
    except UnsupportedModelError as exc:
        return f"onnxruntime cannot run it ({exc})", None
    for name, value in zip(runtime.output_names(session), outputs):
        if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(np.isfinite(value)):
            return f"output {name!r} is not finite", None
    return None, list(outputs)


def save_external(
    model: onnx.ModelProto, path: str | os.PathLike, location: str, threshold: int = 1024
) -> None:
    """Write ``model`` to ``path`` with every initializer over ``threshold`` bytes in ``location`` beside it.

    ``model`` is neither modified nor copied: onnx's own external-data save empties the tensors of the proto
    it is given (so callers had to copy a model of several GB first); here each large tensor's bytes go
    to the data file one at a time and the model file gets a light copy pointing at them.
    """
    g = model.graph
    initializers = []
    with open(os.path.join(os.path.dirname(os.fspath(path)), location), "wb") as data:
        for tensor in g.initializer:
            if tensor_bytes(tensor) <= threshold:
                initializers.append(tensor)
                continue
            if tensor.HasField("raw_data"):
                raw = tensor.raw_data
            else:
                raw = onnx.numpy_helper.to_array(tensor).tobytes()
            stub = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                    data_location=onnx.TensorProto.EXTERNAL)
            entries = {"location": location, "offset": str(data.tell()), "length": str(len(raw))}
            for key, value in entries.items():
                stub.external_data.add(key=key, value=value)
            data.write(raw)
            del raw
            initializers.append(stub)
    graph = onnx.helper.make_graph(g.node, g.name, g.input, g.output, initializer=initializers,
                                   value_info=g.value_info, doc_string=g.doc_string,
                                   sparse_initializer=g.sparse_initializer)
    light = onnx.ModelProto(
        ir_version=model.ir_version, opset_import=model.opset_import, producer_name=model.producer_name,
        producer_version=model.producer_version, domain=model.domain, model_version=model.model_version,
        doc_string=model.doc_string, metadata_props=model.metadata_props, functions=model.functions,
        graph=graph,
    )
    with open(path, "wb") as fh:
        fh.write(light.SerializeToString(deterministic=True))


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    feed: Mapping[str, np.ndarray] | None = None,
    source: str | os.PathLike | None = None,
    checked_digest: str | None = None,
) -> Path:
    """Validate ``model`` and write it atomically to ``path``; returns the path written.

    ``checked_digest``: the sha256 of the deterministic serialization of a model that already passed
    :func:`check_model` with this ``feed``; when the bytes to write still have that digest, the check is
    not repeated (a changed model is checked again). Models over 2 GB are written with their tensors in
    ``<name>.data`` beside the model, and always checked.
    """
    path = Path(path)
    check_output_path(path, source)
    large = not fits_protobuf(model)
    data = None if large else model.SerializeToString(deterministic=True)
    if data is None or checked_digest is None or hashlib.sha256(data).hexdigest() != checked_digest:
        check_model(model, feed)
    if data is not None:
        return write_atomic(path, lambda fh: fh.write(data))
    try:
        tmpdir = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:  # root passes os.access checks yet cannot create files on some filesystems
        raise OutputError(
            f"cannot write in {path.parent}: {exc.strerror}: choose a writable location"
        ) from None
    try:
        tmp_model = os.path.join(tmpdir, path.name)  # the model and its .data, created as open() creates files
        save_external(model, tmp_model, path.name + ".data")
        os.replace(os.path.join(tmpdir, path.name + ".data"), str(path) + ".data")
        os.replace(tmp_model, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}: choose a writable location") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def check_output_path(path: Path, source: str | os.PathLike | None) -> None:
    """Refuse outputs that would overwrite the input or land in a missing/unwritable folder."""
    if source is not None and not isinstance(source, onnx.ModelProto):
        src = Path(source)
        if src.exists() and path.exists() and os.path.samefile(src, path) or path.resolve() == src.resolve():
            raise OutputError(f"output {path} is the input model: choose another output path (-o)")
        for target in (path, path.with_name(path.name + ".data")):  # models over 2 GB also write <name>.data
            if target.exists() and src.is_file() and target.resolve() in _external_files(src):
                raise OutputError(
                    f"output {target} holds the input model's external data: choose another output path (-o)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist: create it or choose another -o path")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable: choose another -o path")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder: give a file name such as {path / 'model.int8.onnx'}")


def _external_files(model_path: Path) -> set[Path]:
    """The external-data files a model file refers to (resolved); empty when it cannot be read."""
    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
    except Exception:  # not a model: load_model reports that; here there is nothing to protect
        return set()
    base = model_path.resolve().parent
    locations = {e.value for t in _external_tensors(model) for e in t.external_data if e.key == "location"}
    return {(base / location).resolve() for location in locations}


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file atomically: ``write(fh)`` fills a temporary file beside ``path``, which is flushed to
    disk and renamed over ``path``; a failure or an interruption leaves no partial file. The one writer
    of every file onnxq writes (models, statistics, reports, dumps).

    The temporary file is created as ``open()`` creates a new file, mode 0666 minus the umask (not the
    0600 of ``tempfile.mkstemp``), so every output gets the permissions a model gets.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist: create it or choose a writable path")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:  # root passes os.access checks yet cannot create files on some filesystems
            raise OutputError(f"cannot write in {parent}: {exc.strerror}: choose a writable location") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}: choose a writable location") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write a small file (report, json) atomically with :func:`write_atomic`."""
    return write_atomic(path, lambda fh: fh.write(data))
