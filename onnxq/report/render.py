"""Render reports for people (text, markdown) and machines (json)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from onnxq.records import MethodChoice, QuantPlan, QuantReport


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def report_text(report: QuantReport, *, verbose: bool = False) -> str:
    counts = report.counts()
    lines = [
        f"model      {report.model}",
        f"target     {report.target}   method {report.method}",
        f"data       {report.data}{sample_count(report)}" + (f"; {report.runs}" if report.runs else ""),
    ]
    if report.choice is not None:
        lines.append(choice_line(report.choice))
    for note in report.preprocess:
        lines.append(f"preprocess {note}")
    lines.append(
        f"quantized  {len(report.quantized_nodes)} nodes: {counts.get('activation', 0)} activations, "
        f"{counts.get('weight', 0)} weights, {counts.get('bias', 0)} biases"
    )
    skipped = Counter((s.op_type, s.rule) for s in report.skipped)
    interesting = {k: v for k, v in skipped.items() if k[1] != "not-a-quantized-op"}
    lines.append(f"float      {len(report.skipped)} nodes left in float ({_ops_summary(skipped)})")
    for (op, rule), n in sorted(interesting.items()):
        reason = next(s.reason for s in report.skipped if s.op_type == op and s.rule == rule)
        lines.append(f"           {n} x {op}: {reason}")
    if report.check:
        lines.append(check_line(report.check, report.check_samples))
    lines.append("timings    " + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items()))
    if verbose:
        lines.append("")
        rows = [
            [t.tensor, t.role, t.dtype, t.rule, "" if t.axis is None else str(t.axis), f"{t.scale:.4g}",
             f"[{t.lo:.4g}, {t.hi:.4g}]" if t.role == "activation" else "", t.group or ""]
            for t in report.tensors
        ]
        lines += _table(["tensor", "role", "dtype", "rule", "axis", "scale", "range", "group"], rows)
    return "\n".join(lines)


def choice_line(choice: MethodChoice) -> str:
    """What ``--method auto`` kept, each candidate's worst-slice score, and on which samples."""
    if not choice.scores:
        return f"method     auto kept {choice.chosen} without scoring: {choice.reason}"
    if choice.by_metric:
        others = ", ".join(f"{name} {score:.6g}" for name, score in choice.scores)
        return (f"method     auto kept {choice.chosen}: your metric {choice.score_db:.6g} on {choice.scoring} "
                f"({others}; ties go to the worst output slice SQNR)")
    others = ", ".join(f"{name} {score:.2f}" for name, score in choice.scores)
    logs = (f"; {_names(choice.log_probability_outputs)} ranked as centred log-probabilities"
            if choice.log_probability_outputs else "")
    return (f"method     auto kept {choice.chosen}: worst output slice {choice.score_db:.2f} dB SQNR on "
            f"{choice.scoring} ({others}; within 0.05 dB the mean slice SQNR decides{logs})")


def _names(outputs: tuple[str, ...]) -> str:
    """``output 'prob'`` / ``outputs 'a', 'b'``."""
    return ("output " if len(outputs) == 1 else "outputs ") + ", ".join(repr(o) for o in outputs)


def sample_count(report: QuantReport) -> str:
    """`` (16 samples)``; `` (16 samples in 8 feeds)`` when feeds hold batches; nothing when no data ran."""
    if not report.samples:
        return ""
    plural = "" if report.samples == 1 else "s"
    if report.feeds and report.feeds != report.samples:
        return f" ({report.samples} sample{plural} in {report.feeds} feeds)"
    return f" ({report.samples} sample{plural})"


def cosine_text(value: float) -> str:
    """A cosine with the digits that tell it from 1: 0.999999 rounds up, so ``1 - 3.2e-09`` says how close."""
    if value < 1.0 and round(value, 6) >= 1.0:
        return f"1 - {1.0 - value:.1e}"
    return f"{value:.6f}"


def check_line(check: dict[str, float], samples: int) -> str:
    """The final check: a smoke test on the first calibration feed, not an accuracy measure."""
    return "check      " + check_summary(check, samples)


def check_summary(check: dict[str, float], samples: int) -> str:
    plural = "" if samples == 1 else "s"
    parts = []
    if "output_cosine" in check:
        parts.append(f"worst output cosine {cosine_text(check['output_cosine'])}")
    if "output_sqnr_db" in check:
        parts.append(f"SQNR {check['output_sqnr_db']:.1f} dB")
    parts += [f"{k} {v:.6g}" for k, v in check.items() if k not in ("output_cosine", "output_sqnr_db")]
    return (f"onnx full check passed; onnxruntime ran {samples} sample{plural} (a smoke test, not an "
            f"accuracy measure: onnxq compare): " + ", ".join(parts))


def _ops_summary(skipped: Counter) -> str:
    by_op = Counter()
    for (op, _), n in skipped.items():
        by_op[op] += n
    return ", ".join(f"{op} x{n}" for op, n in by_op.most_common(8)) + (" ..." if len(by_op) > 8 else "")


def report_json(report: QuantReport, fallback: dict[str, Any] | None = None) -> str:
    """The report as JSON; ``fallback``: the automatic fallback's steps (``FallbackResult.to_dict()``)."""
    data = report.to_dict()
    data.pop("fallback", None)  # present only when a fallback ran, with the steps' summary fields
    if fallback is None and report.fallback is not None:
        fallback = report.fallback.to_dict()
    if fallback is not None:
        data["fallback"] = fallback
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def plan_text(plan: QuantPlan) -> str:
    lines = [f"target {plan.target}: {len(plan.quantized_nodes)} nodes quantized, {len(plan.skips)} left in float", ""]
    rows = [
        [s.tensor, s.role.value, s.dtype, "" if s.axis is None else str(s.axis), s.rule,
         ", ".join(f"{n}:{i}" for n, i in s.consumers[:3]) + (" ..." if len(s.consumers) > 3 else ""), s.group or ""]
        for s in plan.specs
    ]
    lines += _table(["tensor", "role", "dtype", "axis", "rule", "feeds", "scale group"], rows)
    lines += ["", "left in float:"]
    lines += _table(["node", "op", "rule", "reason"], [[s.node, s.op_type, s.rule, s.reason] for s in plan.skips])
    return "\n".join(lines)
