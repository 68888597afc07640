"""Reading and writing files: the only place (with the CLI) that touches model files.

``load_model`` never modifies the file it reads. ``write_model`` writes atomically: a temporary file in
the destination folder renamed over the target, so a failure or an interruption leaves no partial file.
Validating a model before it is written runs onnxruntime, so it lives beside the runtime
(:func:`onnxq.check.save_model`: check, then ``write_model``); this module imports no onnxruntime and
sits below :mod:`onnxq.runtime`, which spills models over 2 GB through :func:`save_external`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

from onnxq.errors import ModelLoadError, OutputError, UnsupportedModelError
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
            f"cannot read external data of {path}: {error_line(exc)}; the data file is damaged or does not "
            "belong to this model: copy the complete file beside it or re-export the model"
        ) from None


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


def error_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters (for messages quoting a library)."""
    return " ".join(str(exc).split())[:300]


def write_model(model: onnx.ModelProto, path: str | os.PathLike, *, data: bytes | None = None) -> Path:
    """Write ``model`` atomically to ``path`` (no validation: :func:`onnxq.check.save_model` validates
    first); returns the path written.

    ``data``: the model's deterministic serialization when the caller already made it. Models over 2 GB
    are written with their tensors in ``<name>.data`` beside the model.
    """
    path = Path(path)
    if fits_protobuf(model):
        data = data if data is not None else model.SerializeToString(deterministic=True)
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
