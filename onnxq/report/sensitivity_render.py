"""Render a sensitivity ranking and a fallback result as text, markdown or JSON."""

from __future__ import annotations

import json
import math

from onnxq.records import FallbackResult, LayerSensitivity, Score, SensitivityReport


def _n(value: float | None, fmt: str = ".3f") -> str:
    if value is None:
        return ""
    return format(value, fmt) if math.isfinite(value) else str(value)


def _headers(report: SensitivityReport) -> list[str]:
    gain = "LOO gain" + (" (metric)" if report.measure == "metric" else " (dB)")
    cols = ["#", "layer", "op", gain]
    if report.measure == "metric":
        cols.append("LOO SQNR gain (dB)")
    cols += ["only: SQNR dB", "only: cosine"]
    if report.measure == "metric":
        cols.append("only: metric")
    cols += ["all but: SQNR dB"]
    if report.measure == "metric":
        cols.append("all but: metric")
    return cols


def _row(k: int, layer: LayerSensitivity, metric: bool) -> list[str]:
    only, loo = layer.only, layer.all_but
    row = [str(k), layer.node, layer.op_type, _n(layer.gain, "+.3f")]
    if metric:
        row.append(_n(layer.sqnr_gain, "+.3f"))
    row += [_n(only.sqnr_db if only else None, ".2f"), _n(only.cosine if only else None, ".5f")]
    if metric:
        row.append(_n(only.metric if only else None))
    row.append(_n(loo.sqnr_db if loo else None, ".2f"))
    if metric:
        row.append(_n(loo.metric if loo else None))
    return row


def _rows(report: SensitivityReport, top: int) -> list[list[str]]:
    layers = report.layers if top <= 0 else report.layers[:top]
    return [_row(k + 1, layer, report.measure == "metric") for k, layer in enumerate(layers)]


def _score(s: Score) -> str:
    return f"SQNR {s.sqnr_db:.2f} dB, cosine {s.cosine:.5f}" + (f", metric {s.metric:.4g}" if s.metric is not None else "")


def _preamble(report: SensitivityReport) -> list[str]:
    lines = [f"model         {report.model}"]
    if report.calibration:
        lines.append(f"calib data    {report.calibration}")
    lines += [f"eval data     {report.data} ({report.samples} samples)", f"all quantized {_score(report.all_quantized)}"]
    if report.float_metric is not None:
        lines.append(f"float metric  {report.float_metric:.4g}")
    lines.append(f"evaluations   {report.evaluations} configurations in {report.seconds:.1f} s")
    return lines


def sensitivity_text(report: SensitivityReport, top: int = 20) -> str:
    """A ranked table, most sensitive first (LOO = leave one out; only = one at a time)."""
    headers, rows = _headers(report), _rows(report, top)
    widths = [max(len(x) for x in col) for col in zip(headers, *rows)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    lines = _preamble(report) + ["", fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    if 0 < top < len(report.layers):
        lines.append(f"... {len(report.layers) - top} more (--top 0 shows all)")
    return "\n".join(lines)


def sensitivity_markdown(report: SensitivityReport, top: int = 20) -> str:
    headers, rows = _headers(report), _rows(report, top)
    esc = lambda s: s.replace("|", "\\|")
    lines = [f"- {line}" for line in _preamble(report)] + [""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---:" if i in (0,) or i >= 3 else "---" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def sensitivity_json(report: SensitivityReport, top: int = 0) -> str:
    """Every layer, whatever ``top`` (which limits the human tables only): machines filter for themselves."""
    data = report.to_dict()
    return json.dumps(data, indent=2, default=str, allow_nan=True)


def fallback_text(result: FallbackResult) -> str:
    unit = "dB" if result.measure == "sqnr_db" else "points"
    target = "met" if result.met else "not met" if result.rule.has_target else "none"
    how = "exact runs" if result.exact else "estimate"
    lines = [f"fallback   {len(result.steps)} layer(s) left in float ({result.evaluations} evaluations); "
             + f"target {target} ({how})"]
    if result.eval_data:
        lines.append(f"           evaluated on {result.eval_data} ({result.eval_samples} samples)")
    lines.append(f"           all quantized: {_score(result.start)}")
    for k, s in enumerate(result.steps, 1):
        lines.append(f"           {k:2d}. {s.node} ({s.op_type}) bought {s.bought:+.4g} {unit} -> {_score(s.after)}")
    if result.verified is not None:
        verdict = "" if result.verified_met is None else (" (target met)" if result.verified_met else " (TARGET NOT MET)")
        lines.append(f"           written model, exact: {_score(result.verified)}{verdict}")
    return "\n".join(lines)
