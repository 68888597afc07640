"""Gates for CI on a comparison (``onnxq compare --min-sqnr ...``): one line per violated tolerance."""

from __future__ import annotations

from dataclasses import dataclass

from onnxq.errors import ConfigError
from onnxq.records.compare import CompareReport


@dataclass(frozen=True)
class Tolerances:
    """Gates for CI: None disables a check. ``min_top1_pct`` and ``max_loss_pct`` are percentages."""

    min_sqnr_db: float | None = None
    min_cosine: float | None = None
    min_top1_pct: float | None = None
    max_loss_pct: float | None = None


def check_tolerances(report: CompareReport, tol: Tolerances) -> tuple[str, ...]:
    """One line per violated tolerance (empty when all hold); a gate that cannot apply is a ConfigError."""
    out = []
    for o in report.outputs:
        if tol.min_sqnr_db is not None and not o.sqnr_db >= tol.min_sqnr_db:
            out.append(f"output '{o.name}': SQNR {o.sqnr_db:.2f} dB below the minimum {tol.min_sqnr_db:g} dB")
        if tol.min_cosine is not None and not o.cosine >= tol.min_cosine:
            out.append(f"output '{o.name}': cosine {o.cosine:.6f} below the minimum {tol.min_cosine:g}")
    if tol.min_top1_pct is not None:
        logits = [o for o in report.outputs if o.top1 is not None]
        if not logits:
            raise ConfigError("a minimum top-1 agreement is set but no output is plausibly logits or class "
                              "scores ([batch, classes] with rows not of unit norm: unit-norm rows are "
                              "embeddings); drop the top-1 tolerance for this model (use --min-cosine)")
        for o in logits:
            if not o.top1 >= tol.min_top1_pct:
                out.append(f"output '{o.name}': top-1 agreement {o.top1:.2f} % below the minimum "
                           f"{tol.min_top1_pct:g} %")
    if tol.max_loss_pct is not None:
        if report.metric is None:
            raise ConfigError("a maximum quantization loss is set but no metric was given; "
                              "pass a metric script (--metric-script) or drop the loss tolerance")
        if not report.metric.loss_pct <= tol.max_loss_pct:
            out.append(f"metric: quantization loss {report.metric.loss_pct:.3f} % above the maximum "
                       f"{tol.max_loss_pct:g} %")
    return tuple(out)
