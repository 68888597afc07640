"""Render a CompareReport for people (a text table) and machines (json)."""

from __future__ import annotations

import json
import math
from typing import Any

from onnxq.records import CompareReport

DEFAULT_TOP = 20


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [headers, ["-" * w for w in widths], *rows]]


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def compare_text(report: CompareReport, *, top: int = DEFAULT_TOP, gated: bool = True) -> str:
    """Header, one row per output, the metric loss, the ``top`` worst layers (0 = all), the verdict
    (``gated``: whether any tolerance was given; without one there is nothing to pass or fail)."""
    mode = ("onnxruntime optimizations ON for its outputs" if report.optimized
            else "onnxruntime optimizations off: exact fake quantization")
    lines = [
        f"float      {report.float_model}",
        f"quantized  {report.quant_model} ({mode})",
        f"data       {report.data} ({report.samples} samples)",
        "",
    ]
    rows = [[o.name, _shape(o.shape), f"{o.sqnr_db:.2f}", f"{o.cosine:.6f}", f"{o.max_abs:.4g}",
             _num(o.top1, ".2f")] for o in report.outputs]
    lines += _table(["output", "shape", "SQNR dB", "cosine", "max abs", "top-1 %"], rows)
    if report.metric is not None:
        m = report.metric
        lines += ["", f"metric     float {m.float_score:.6g}   quantized {m.quant_score:.6g}   "
                      f"loss {m.loss_pct:.3f} %"]
    if report.layers:
        shown = report.layers if top <= 0 else report.layers[:top]
        lines += ["", f"per-layer SQNR, worst first ({len(shown)} of {len(report.layers)} tensors both "
                      "models produce; 'before Q/DQ' = before the tensor's own quantization):"]
        rows = [[r.tensor, r.op_type, r.node, r.role, f"{r.sqnr_db:.2f}", _num(r.pre_qdq_sqnr_db, ".2f"),
                 f"{r.cosine:.6f}", f"{r.max_abs:.4g}"] for r in shown]
        lines += _table(["tensor", "op", "node", "role", "SQNR dB", "before Q/DQ", "cosine", "max abs"], rows)
    lines.append("")
    if report.violations:
        lines.append(f"FAILED     {len(report.violations)} tolerance(s) violated:")
        lines += [f"           {v}" for v in report.violations]
    elif gated:
        lines.append("ok         all given tolerances hold")
    else:
        lines.append("tolerances none given (--min-sqnr, --min-cosine, --min-top1, --max-loss make this a CI gate)")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def compare_json(report: CompareReport) -> str:
    data = _finite(report.to_dict())
    data["passed"] = not report.violations
    return json.dumps(data, indent=2, sort_keys=True)
