"""Render reports for people (text, markdown) and machines (json)."""

from __future__ import annotations

import json
from collections import Counter

from onnxq.placement.plan import QuantPlan
from onnxq.report.records import QuantReport


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def report_text(report: QuantReport, *, verbose: bool = False) -> str:
    counts = report.counts()
    lines = [
        f"model      {report.model}",
        f"target     {report.target}   method {report.method}",
        f"data       {report.data} ({report.samples} samples)",
    ]
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
        lines.append(
            "check      onnx full check passed; onnxruntime ran a sample: "
            + ", ".join(f"{k} {v:.4g}" for k, v in report.check.items())
        )
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


def _ops_summary(skipped: Counter) -> str:
    by_op = Counter()
    for (op, _), n in skipped.items():
        by_op[op] += n
    return ", ".join(f"{op} x{n}" for op, n in by_op.most_common(8)) + (" ..." if len(by_op) > 8 else "")


def report_json(report: QuantReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str)


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
