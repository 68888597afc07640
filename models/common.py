"""Helpers shared by the benchmark model recipes (``models/<key>.py``).

The recipes are scripts, not part of the ``onnxq`` package: they may use torch and transformers to build
a float model once, but evaluating a model needs only onnxruntime, numpy and Pillow. ``models`` is a
namespace package: put the repository root on ``sys.path`` (the scripts in this folder do it themselves)
and import ``models.common``.

Locations, overridable by environment variables so nothing is ever written next to read-only data:

* built models: ``$ONNXQ_MODELS``, else ``<repo>/models/.cache`` (git-ignored);
* real data: ``$ONNXQ_DATA``, else ``<repo>/../shared/data``.

Evaluation runs onnxruntime on the CPU, batch 1, with ``$ONNXQ_THREADS`` (default 2) intra-op threads
and sequential execution, so a figure does not depend on the machine's core count more than it must.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_THREADS = 2
RAPIDOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
RAPIDOCR_WHEEL_GLOB = "rapidocr_onnxruntime-1.4.4-*.whl"


# ------------------------------------------------------------------------------------------ locations
def cache_dir(cache: str | Path | None = None) -> Path:
    """Folder for built models: ``cache`` if given, else ``$ONNXQ_MODELS``, else ``<repo>/models/.cache``."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get("ONNXQ_MODELS")
    return Path(env) if env else REPO / "models" / ".cache"


def data_root(root: str | Path | None = None) -> Path:
    """The real-data folder: ``root`` if given, else ``$ONNXQ_DATA``, else ``<repo>/../shared/data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("ONNXQ_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def data_path(root: str | Path | None, *parts: str) -> Path:
    """A file or folder inside the data root; raises FileNotFoundError naming the fix when it is missing."""
    path = data_root(root).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set ONNXQ_DATA to the shared data folder")
    return path


# ------------------------------------------------------------------------------------ files and models
def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename: no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a model is no secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model_atomic(model, path: Path) -> Path:
    """Check an in-memory ModelProto (full check, with shape inference) and write it atomically."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    return atomic_write_bytes(path, model.SerializeToString())


def run_stamp(*paths: str | Path, extra: tuple = ()) -> tuple:
    """What a float reference computed once per process depends on: each model file (size, mtime), the
    evaluation mode and threads (``ONNXQ_EVAL_OPT``, ``ONNXQ_THREADS``) and ``extra`` (e.g. a data manifest)."""
    files = tuple((st.st_size, st.st_mtime_ns) for st in (Path(p).stat() for p in paths))
    return (files, os.environ.get("ONNXQ_EVAL_OPT"), os.environ.get("ONNXQ_THREADS"), *extra)


def fresh_folder(folder: Path, manifest: dict) -> bool:
    """Whether ``folder`` holds generated data made as ``manifest`` says (its manifest.json, written last,
    equals it, and labels.json exists); when not, the folder is created and its stale manifest removed, so
    that an interrupted rewrite is never taken as complete."""
    mpath = folder / "manifest.json"
    if mpath.is_file() and (folder / "labels.json").is_file():
        try:
            if json.loads(mpath.read_text()) == manifest:
                return True
        except ValueError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    mpath.unlink(missing_ok=True)
    return False


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_valid_model(path: Path, inputs: Sequence[str], outputs: Sequence[str]) -> bool:
    """True when ``path`` is a checkable ONNX model whose graph inputs and outputs are the expected names.

    Used by every ``build()`` to skip work that is already done (and to redo it after an interrupted or
    stale build).
    """
    import onnx

    if not path.is_file():
        return False
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - any failure means "rebuild"
        log.warning("%s is not a valid model (%s); rebuilding", path, exc)
        return False
    init = {t.name for t in model.graph.initializer}
    got_in = [i.name for i in model.graph.input if i.name not in init]
    got_out = [o.name for o in model.graph.output]
    return got_in == list(inputs) and got_out == list(outputs)


def fold_constants(model):
    """Replace every node whose inputs are all constants by an initializer holding its value.

    Why: torch's TorchScript exporter computes the pads of every ``Pad`` from a chain of
    ConstantOfShape/Slice/Transpose/Cast nodes and fails to fold it ("Only steps=1 can be constant
    folded"), leaving 200+ constant nodes that a quantizer would have to see through. Folding them
    changes no value (each node is evaluated by onnx's reference implementation) and leaves real
    quantization work (Conv, MatMul, ...) with constant operands alone only when those operands are
    themselves computed from constants, which the exporters do not emit.
    """
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    const = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    for node in graph.node:
        foldable = node.domain in ("", "ai.onnx") and node.op_type not in ("RandomNormal", "RandomUniform")
        if foldable and all(i == "" or i in const for i in node.input):
            values = ReferenceEvaluator(node, opsets=opsets).run(None, {i: const[i] for i in node.input if i})
            for name, value in zip(node.output, values):
                const[name] = np.asarray(value)
            continue
        kept.append(node)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    new_inits = [numpy_helper.from_array(const[name], name) for name in const if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    onnx.checker.check_model(model)
    return model


# ----------------------------------------------------------------------------------------- rapidocr wheel
def rapidocr_onnx(member: str, cache: str | Path | None = None) -> bytes:
    """Bytes of ``rapidocr_onnxruntime/models/<member>`` read out of the rapidocr-onnxruntime 1.4.4 wheel.

    Why the wheel: it is the PyPI package that ships the PP-OCR ONNX files (Apache-2.0); installing it
    would pull OpenCV and Shapely for nothing. The wheel is looked for in ``$ONNXQ_RAPIDOCR_WHEEL`` (a
    file), then in ``<cache>/wheels``; when absent it is fetched there with ``pip download --no-deps``.
    """
    wheel = _find_or_download_wheel(cache_dir(cache) / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(f"rapidocr_onnxruntime/models/{member}")


def extract_rapidocr_model(key: str, member: str, sha256: str, cache: str | Path | None = None) -> Path:
    """Copy ``member`` out of the rapidocr wheel to ``<cache>/<key>.onnx``, unchanged, unless an intact
    copy (same SHA-256) is already there; returns the path."""
    path = cache_dir(cache) / f"{key}.onnx"
    if path.is_file() and sha256_file(path) == sha256:
        return path
    data = rapidocr_onnx(member, cache)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RuntimeError(f"{member} has SHA-256 {got}, expected {sha256}: use the {RAPIDOCR_WHEEL} wheel")
    return atomic_write_bytes(path, data)


def _find_or_download_wheel(folder: Path) -> Path:
    env = os.environ.get("ONNXQ_RAPIDOCR_WHEEL")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"ONNXQ_RAPIDOCR_WHEEL={env} is not a file: point it at the wheel")
        return Path(env)
    found = sorted(folder.glob(RAPIDOCR_WHEEL_GLOB))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", RAPIDOCR_WHEEL, folder)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), RAPIDOCR_WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(RAPIDOCR_WHEEL_GLOB))
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({done.stderr.strip()[-200:]}): download the wheel by hand and set "
            "ONNXQ_RAPIDOCR_WHEEL to its path"
        )
    return found[0]


# ------------------------------------------------------------------------------------------ inference
def session(model_path: str | Path, threads: int | None = None):
    """A deterministic onnxruntime CPU session: ``threads`` (else $ONNXQ_THREADS, else 2), sequential."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or int(os.environ.get("ONNXQ_THREADS", DEFAULT_THREADS))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # ONNXQ_EVAL_OPT=exact runs Q/DQ models as exact fake quantization (what TensorRT computes): onnxruntime's
    # graph optimizations rewrite Q/DQ into int8 kernels that differ from it (on x86 without VNNI its
    # int8 Conv saturates with int8 activations), so they are disabled.
    if os.environ.get("ONNXQ_EVAL_OPT", "all") == "exact":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def run_model(model_path: str | Path, feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """Run ``model_path`` on each feed (batch 1 as the feeds come) and yield the list of its outputs."""
    sess = session(model_path)
    for feed in feeds:
        yield sess.run(None, feed)


def first_outputs(model_path: str | Path, feeds: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output of every feed, concatenated along the batch axis."""
    return np.concatenate([out[0] for out in run_model(model_path, feeds)], axis=0)


# -------------------------------------------------------------------------------------------- metrics
def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of rows whose arg-max equals the label."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.shape[0] != labels.shape[0] or labels.size == 0:
        raise ValueError(f"{logits.shape[0]} predictions for {labels.shape[0]} labels: they must match")
    return float(100.0 * np.mean(np.argmax(logits, axis=1) == labels))


def top1_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Percentage of rows whose arg-max equals the reference model's arg-max on the same input."""
    return top1_accuracy(logits, np.argmax(np.asarray(reference), axis=1))


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span (scipy.stats.rankdata 'average')."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (ties handled as scipy does)."""
    ra, rb = rank_average(a), rank_average(b)
    if ra.size != rb.size or ra.size < 2:
        raise ValueError(f"spearman needs two sequences of equal length >= 2, got {ra.size} and {rb.size}")
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


# -------------------------------------------------------------------------------------------- images
def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image to HxWx3 uint8 RGB (grey or RGBA images converted as PIL does)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def bgr_unit_nchw(rgb: np.ndarray) -> np.ndarray:
    """PaddleOCR normalisation: BGR channel order, ``(x/255 - 0.5)/0.5``, as a 1xCxHxW float32 array."""
    x = np.asarray(rgb, dtype=np.float32)[:, :, ::-1] / 255.0
    x = (x - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
