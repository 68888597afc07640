"""The only module that imports onnxruntime: sessions, options and the run loop.

Keeping onnxruntime behind this door lets the rest of onnxq stay pure (graph edits, math) and lets
tests and users swap providers in one place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from onnxq.errors import UnsupportedModelError

log = logging.getLogger(__name__)

ort.set_default_logger_severity(3)


def session_options(*, optimize: bool = False, threads: int | None = None) -> ort.SessionOptions:
    """Options for a deterministic CPU session.

    Calibration runs with graph optimizations off (``optimize=False``) so that every planned tensor
    still exists by its name and holds exactly the float model's values.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is None:
        threads = int(os.environ.get("ONNXQ_THREADS", "0"))
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


def make_session(
    model: onnx.ModelProto | bytes | str,
    *,
    optimize: bool = False,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> ort.InferenceSession:
    """An onnxruntime session; a model onnxruntime rejects becomes an UnsupportedModelError."""
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(
            payload, sess_options=session_options(optimize=optimize, threads=threads), providers=list(providers)
        )
    except Exception as exc:  # onnxruntime raises several private exception types
        raise UnsupportedModelError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def run(session: ort.InferenceSession, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None):
    """Run one feed; onnxruntime errors become UnsupportedModelError with onnxruntime's first line."""
    try:
        return session.run(list(outputs) if outputs is not None else None, dict(feed))
    except Exception as exc:
        raise UnsupportedModelError(f"onnxruntime failed to run the model: {_first_line(exc)}") from None


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
