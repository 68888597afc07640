"""A self-contained HTML report a user opens in a browser: plan, histograms, per-layer error, sensitivity.

One file, no JavaScript, no network: charts are inline SVG, long tables fold into ``<details>``. Sections
appear when their data is given:

* summary: model, target, method, data, counts, the output check and timings;
* automatic fallback: the stopping rule, the score before and after, each layer moved to float and what
  it bought, and the ``--exclude-node`` patterns that reproduce the model;
* sensitivity: the ranking as a bar chart (leave-one-out gain, and the one-at-a-time score);
* per-layer SQNR (``onnxq compare --per-layer`` data) along the graph, worst layers listed;
* the plan: quantized nodes, nodes left in float grouped by rule with the reason;
* one histogram of |x| per calibrated activation (log counts) with the chosen threshold marked in red
  and the observed maximum in grey.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from onnxq.collect.stats import TensorStats
from onnxq.records import (
    FallbackResult,
    LayerComparison,
    MethodChoice,
    QuantParams,
    QuantPlan,
    QuantReport,
    Score,
    SensitivityReport,
)
from onnxq.report.render import check_summary, sample_count

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1280px;color:#1d2330;
padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eceff4;text-align:left;
vertical-align:top}th{background:#f4f6fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f4f6fa;padding:1px 4px;border-radius:3px}
.muted{color:#6b7485}.ok{color:#17803d;font-weight:600}.bad{color:#b42318;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px}
.card{border:1px solid #e3e7ee;border-radius:6px;padding:6px 8px}.card .t{font:11px ui-monospace,monospace;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
svg text{font:11px system-ui,sans-serif;fill:#3b4252}details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
"""

MAX_BARS = 40
HIST_BARS = 96


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers) if any(headers) else ""
    body = []
    for row in rows:
        cells = "".join(f"<td class=n>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{''.join(body)}</table>"


def _score(s: Score | None) -> str:
    if s is None:
        return ""
    text = f"SQNR {s.sqnr_db:.2f} dB, cosine {s.cosine:.5f}"
    return text + (f", metric {s.metric:.4g}" if s.metric is not None else "")


def _summary(report: QuantReport) -> str:
    counts = report.counts()
    rows = [
        ("model", report.model), ("target", report.target), ("method", report.method),
        ("data", f"{report.data}{sample_count(report)}"),
        ("quantized", (f"{len(report.quantized_nodes)} nodes: {counts.get('activation', 0)} activations, "
                      f"{counts.get('weight', 0)} weights, {counts.get('bias', 0)} biases")),
        ("left in float", f"{len(report.skipped)} nodes"),
    ]
    rows += [("preprocess", note) for note in report.preprocess]
    if report.check:
        rows.append(("check", check_summary(report.check, report.check_samples)))
    rows.append(("timings", ", ".join(f"{k} {v:.2f} s" for k, v in report.timings.items())))
    return "<h2>Summary</h2>" + _table(["", ""], rows)


def _choice(choice: MethodChoice) -> str:
    """What --method auto kept: every candidate's held-out score, and the kept model's figures per output."""
    html = ["<h2>Method: auto</h2>", f"<p>kept <b>{_e(choice.chosen)}</b>"]
    if not choice.scores:
        return "".join(html) + f" without scoring: {_e(choice.reason)}</p>"
    logs = (f" (probability outputs {_e(', '.join(choice.log_probability_outputs))} as centred log-probabilities, "
            "their figures below as probabilities)" if choice.log_probability_outputs else "")
    html.append(f", scored on {_e(choice.scoring)} by the worst output slice SQNR against float{logs}</p>")
    rows = [(name + (" (kept)" if name == choice.chosen else ""), _num(score, 4)) for name, score in choice.scores]
    html.append(_table(["candidate", "worst slice SQNR dB"], rows, numeric=(1,)))
    rows = [(o.output, _num(o.sqnr_db, 4), o.worst_slice or "whole", _num(o.worst_sqnr_db, 4),
             _num(o.tail_sqnr_db, 4)) for o in choice.outputs]
    html.append(_table(["output", "SQNR dB", "worst slice", "its SQNR dB", "twentieth-worst slice SQNR dB"], rows,
                       numeric=(1, 3, 4)))
    return "".join(html)


def _fallback(fb: FallbackResult) -> str:
    rule = fb.rule
    parts = [f"max float layers {rule.max_float_layers}" if rule.max_float_layers is not None else "",
             f"min SQNR {rule.min_sqnr_db:g} dB" if rule.min_sqnr_db is not None else "",
             f"max metric drop {rule.max_metric_drop:g}" if rule.max_metric_drop is not None else ""]
    met = fb.verified_met if fb.verified_met is not None else fb.met
    status = ("<span class=ok>target met</span>" if met else "<span class=bad>target not met</span>") \
        if rule.has_target else "<span class=muted>no target: the top layers by sensitivity</span>"
    out = [f"<h2>Automatic fallback</h2><p>Rule: {_e(', '.join(p for p in parts if p))}. {status}.</p>"]
    how = "gated model, exact" if fb.exact else "gated model, estimate"
    rows = [("float model metric", _num(fb.float_metric))] if fb.float_metric is not None else []
    rows += [(f"all layers quantized ({how})", _score(fb.start)),
             (f"after {len(fb.steps)} layer(s) in float ({how})", _score(fb.final))]
    if fb.verified is not None:
        rows.append(("written model, evaluated exactly", _score(fb.verified)))
    out.append(_table(["", ""], rows))
    if fb.steps:
        unit = "dB" if fb.measure == "sqnr_db" else "metric points"
        out.append(_table(["#", "layer left in float", "op", f"bought ({unit})", "score after"],
                          [(k + 1, s.node, s.op_type, f"{s.bought:+.4g}", _score(s.after))
                           for k, s in enumerate(fb.steps)], numeric=(0, 3)))
        out.append("<p>Reproduce: " + " ".join(f"<code>--exclude-node '{_e(p)}'</code>"
                                                for p in fb.exclude_patterns) + "</p>")
    return "".join(out)


def _hbars(labels: list[str], series: list[tuple[str, list[float | None], str]]) -> str:
    """Horizontal bars, one row per label; each series (title with unit, values, colour) gets its own
    panel with its own scale and zero line, so series in different units never share an axis."""
    label_w, panel_w, gap, row_h = 330, 520 if len(series) == 1 else 330, 70, 16
    height = 34 + row_h * len(labels)
    width = label_w + len(series) * (panel_w + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="bar chart">']
    for i, label in enumerate(labels):
        y = 26 + i * row_h
        short = label if len(label) <= 48 else "…" + label[-47:]
        parts.append(f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end">{_e(short)}'
                     f'<title>{_e(label)}</title></text>')
    for j, (name, vs, colour) in enumerate(series):
        left = label_w + j * (panel_w + gap)
        finite = [v for v in vs if v is not None and math.isfinite(v)]
        lo, hi = min(finite + [0.0]), max(finite + [0.0])
        span = (hi - lo) or 1.0
        x0 = left + (0 - lo) / span * panel_w
        parts.append(f'<text x="{left}" y="12" fill="{colour}" font-weight="600">{_e(name)}</text>')
        for i, v in enumerate(vs):
            if v is None or not math.isfinite(v):
                continue
            y = 26 + i * row_h
            xv = left + (v - lo) / span * panel_w
            x, w = min(x0, xv), max(abs(xv - x0), 0.5)
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="10" fill="{colour}">'
                         f'<title>{_e(name)}: {v:.4g}</title></rect>')
            parts.append(f'<text x="{max(x0, xv) + 4:.1f}" y="{y + 12}">{v:.3g}</text>')
        parts.append(f'<line x1="{x0:.1f}" y1="20" x2="{x0:.1f}" y2="{height - 4}" stroke="#444"/>')
    parts.append("</svg>")
    return "".join(parts)


def _sensitivity(sens: SensitivityReport, top: int = MAX_BARS) -> str:
    layers = list(sens.layers[:top])
    what = "metric" if sens.measure == "metric" else "output SQNR"
    out = [f"<h2>Sensitivity</h2><p>{sens.samples} samples, {sens.evaluations} configurations in "
           f"{sens.seconds:.1f} s. All quantized: {_e(_score(sens.all_quantized))}"
           + (f"; float metric {_num(sens.float_metric)}" if sens.float_metric is not None else "") + ". "
           f"Leave-one-out gain = {what} with every layer but this one quantized, minus with all quantized "
           "(what keeping it in float buys). Top {n} of {t} layers, most sensitive first.</p>"
           .replace("{n}", str(len(layers))).replace("{t}", str(len(sens.layers)))]
    labels = [f"{l.node} ({l.op_type})" for l in layers]
    series = []
    if any(l.gain is not None for l in layers):
        unit = "metric points" if sens.measure == "metric" else "dB"
        series.append((f"leave-one-out gain ({unit})", [l.gain for l in layers], "#3566c8"))
    if sens.measure == "metric" and any(l.sqnr_gain is not None for l in layers):
        series.append(("leave-one-out gain in output SQNR (dB)", [l.sqnr_gain for l in layers], "#7f9bd6"))
    if any(l.only is not None for l in layers):
        series.append(("SQNR with only this layer quantized (dB)",
                       [l.only.sqnr_db if l.only else None for l in layers], "#d9822b"))
    if series:
        out.append(_hbars(labels, series))
    rows = [(k + 1, l.node, l.op_type, _num(l.gain), _num(l.sqnr_gain), _score(l.only), _score(l.all_but))
            for k, l in enumerate(sens.layers)]
    out.append("<details><summary>Full ranking</summary>"
               + _table(["#", "layer", "op", "gain", "SQNR gain (dB)", "only this quantized",
                         "all but this quantized"], rows, numeric=(0, 3, 4)) + "</details>")
    return "".join(out)


def _layer_sqnr(layers: Sequence[LayerComparison]) -> str:
    ordered = sorted(layers, key=lambda l: l.position)
    if not ordered:
        return ""
    vals = [min(max(l.sqnr_db, -10.0), 80.0) for l in ordered]
    w, h, pad = 1100, 220, 36
    top = max(vals) or 1.0
    n = len(vals)
    bar = (w - pad - 10) / n
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 30}" role="img" '
             'aria-label="per-layer SQNR">')]
    for tick in range(0, int(top) + 1, 10):
        y = h - tick / top * (h - 20)
        parts.append(f'<line x1="{pad}" x2="{w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceff4"/>'
                     f'<text x="{pad - 4}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    colours = {"activation": "#3566c8", "weight": "#7fa650", "float": "#b8bfcc"}
    for i, (l, v) in enumerate(zip(ordered, vals)):
        y = h - max(v, 0.0) / top * (h - 20)
        parts.append(f'<rect x="{pad + i * bar:.2f}" y="{y:.1f}" width="{max(bar - 0.5, 0.5):.2f}" '
                     f'height="{h - y:.1f}" fill="{colours.get(l.role, "#b8bfcc")}"><title>{_e(l.tensor)} '
                     f'({_e(l.op_type)}, {l.role}): {l.sqnr_db:.2f} dB</title></rect>')
    parts.append(f'<text x="{pad}" y="{h + 20}">graph order →   SQNR (dB) of every tensor both models '
                 'produce; blue: quantized activation, green: weight, grey: float op</text></svg>')
    worst = sorted(layers, key=lambda l: l.sqnr_db)[:15]
    table = _table(["tensor", "node", "op", "role", "SQNR dB", "before its Q/DQ"],
                   [(l.tensor, l.node, l.op_type, l.role, _num(l.sqnr_db), _num(l.pre_qdq_sqnr_db))
                    for l in worst], numeric=(4, 5))
    return "<h2>Per-layer SQNR</h2>" + "".join(parts) + "<p>Worst 15:</p>" + table


def _plan(plan: QuantPlan) -> str:
    inputs: dict[str, list[str]] = {}
    for spec in plan.specs:
        for node, idx in spec.consumers:
            inputs.setdefault(node, []).append(f"{idx}:{spec.role.value}")
    q_rows = [(n, ", ".join(inputs.get(n, []))) for n in plan.quantized_nodes]
    by_rule = Counter((s.rule, s.op_type) for s in plan.skips)
    s_rows = []
    for (rule, op), count in sorted(by_rule.items(), key=lambda kv: (kv[0][0] == "not-a-quantized-op", kv[0])):
        skip = next(s for s in plan.skips if s.rule == rule and s.op_type == op)
        names = [s.node for s in plan.skips if s.rule == rule and s.op_type == op]
        s_rows.append((rule, op, count, skip.reason, ", ".join(names[:4]) + (" …" if len(names) > 4 else "")))
    return ("<h2>Plan</h2>"
            f"<p>{len(plan.quantized_nodes)} nodes quantized, {len(plan.skips)} left in float.</p>"
            "<p>Left in float, by rule:</p>"
            + _table(["rule", "op", "nodes", "reason", "examples"], s_rows, numeric=(2,))
            + "<details><summary>Quantized nodes and their quantized inputs</summary>"
            + _table(["node", "inputs (index:role)"], q_rows) + "</details>")


def _histogram_svg(stats: TensorStats, threshold: float) -> str:
    hist = stats.abs_hist
    w, h = 290, 90
    amax = stats.absmax
    xmax = max(amax, threshold) * 1.05 or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 14}">']
    if hist is not None and hist.total:
        counts = hist.counts.astype(np.float64)
        centres = (np.arange(counts.size) + 0.5) * hist.width
        keep = centres <= xmax
        bins = np.minimum((centres[keep] / xmax * HIST_BARS).astype(int), HIST_BARS - 1)
        bars = np.bincount(bins, weights=counts[keep], minlength=HIST_BARS)
        heights = np.log10(1.0 + bars)
        scale = heights.max() or 1.0
        bw = w / HIST_BARS
        path = "".join(f"M{i * bw:.1f},{h}v{-v / scale * (h - 4):.1f}h{bw:.1f}v{v / scale * (h - 4):.1f}"
                       for i, v in enumerate(heights) if v > 0)
        parts.append(f'<path d="{path}" fill="#8aa7e0" stroke="none"/>')
    else:
        parts.append(f'<text x="6" y="{h / 2}">no histogram (min/max calibration)</text>')
    for value, colour, label in ((amax, "#6b7485", "max"), (threshold, "#c4322b", "threshold")):
        x = value / xmax * w
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}" stroke="{colour}" stroke-width="1.5">'
                     f'<title>{label} {value:.4g}</title></line>')
    parts.append(f'<text x="0" y="{h + 12}">0</text><text x="{w}" y="{h + 12}" text-anchor="end">'
                 f'{xmax:.3g}</text></svg>')
    return "".join(parts)


def _histograms(plan: QuantPlan, stats: dict[str, TensorStats], params: dict[str, QuantParams]) -> str:
    cards = []
    for spec in plan.activations():
        s, p = stats.get(spec.tensor), params.get(spec.key)
        if s is None or p is None or not s.count:
            continue
        threshold = max(abs(float(p.lo)), abs(float(p.hi)))
        clipped = 0.0
        hist = s.abs_hist
        if hist is not None and hist.total:
            edges = np.arange(hist.num_bins) * hist.width
            clipped = float(hist.counts[edges >= threshold].sum()) / hist.total * 100
        cards.append(f'<div class=card><div class=t title="{_e(spec.tensor)}">{_e(spec.tensor)}</div>'
                     f"{_histogram_svg(s, threshold)}<div class=muted>threshold {threshold:.4g} · max "
                     f"{s.absmax:.4g} · clipped {clipped:.3g} %</div></div>")
    return ("<h2>Activation histograms</h2><p>|x| over the calibration data, log counts. "
            '<span style="color:#c4322b">Red</span>: the chosen threshold (amax); grey: the observed '
            f"maximum.</p><div class=grid>{''.join(cards)}</div>")


def render_html(
    report: QuantReport | None,
    plan: QuantPlan,
    *,
    stats: dict[str, TensorStats] | None = None,
    params: dict[str, QuantParams] | None = None,
    layers: Sequence[LayerComparison] = (),
    sensitivity: SensitivityReport | None = None,
    fallback: FallbackResult | None = None,
    title: str | None = None,
) -> str:
    """The report page as one string (UTF-8 HTML, inline CSS and SVG, no scripts).

    ``report`` may be None (``onnxq sensitivity``): the summary then only counts the plan.
    """
    title = title or (report.model if report is not None else "model")
    body = [f"<h1>onnxq quantization report</h1><p class=muted>{_e(title)}</p>"]
    body.append(_summary(report) if report is not None else
                f"<h2>Summary</h2><p>target {_e(plan.target)}: {len(plan.quantized_nodes)} nodes quantized, "
                f"{len(plan.skips)} left in float.</p>")
    if report is not None and report.choice is not None:
        body.append(_choice(report.choice))
    if fallback is not None:
        body.append(_fallback(fallback))
    if sensitivity is not None and sensitivity.layers:
        body.append(_sensitivity(sensitivity))
    if layers:
        body.append(_layer_sqnr(layers))
    body.append(_plan(plan))
    if stats and params:
        body.append(_histograms(plan, stats, params))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>onnxq report: {_e(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
