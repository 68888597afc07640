"""The candidates ``--method auto`` chooses among: one config per activation calibration method.

No method wins everywhere on the benchmark models (benchmarks/results/accuracy.md, TensorRT, exact):
YOLOX-Nano mAP minmax 3.0, mse 5.4, percentile 15.5, entropy 28.5; MiniLM Spearman mse 81.6 best,
entropy 80.8 worst; EfficientNet-Lite0 agreement percentile 99.0 best. Solving is pure and cheap once
histograms are collected, so ``auto`` solves with each and keeps the one that scores best on held-out
feeds (onnxq.analysis.heldout). Pure: configs only, no data, no graph.

Each candidate keeps every other setting of the user's config (target, weights, exclusions, percentile,
bins, guard, batch statistic, equalize): only the activation method differs, so the score compares
methods and nothing else. The order is fixed (ties go to the earlier candidate, so the choice is
deterministic): minmax first (never clips: the safe choice when scores tie), then percentile, mse and
entropy.
"""

from __future__ import annotations

import dataclasses

from onnxq.config import Method, QuantConfig

CANDIDATE_METHODS = (Method.MINMAX, Method.PERCENTILE, Method.MSE, Method.ENTROPY)


def candidate_configs(config: QuantConfig) -> list[tuple[str, QuantConfig]]:
    """(method name, config) for every candidate method, in the fixed order of ``CANDIDATE_METHODS``;
    ``config``'s own method (``auto`` or any other) is replaced, everything else is kept."""
    return [
        (m.value, dataclasses.replace(config, activations=dataclasses.replace(config.activations, method=m)))
        for m in CANDIDATE_METHODS
    ]
