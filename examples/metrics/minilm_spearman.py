"""Spearman x100 of MiniLM sentence-pair similarities against STS-B gold scores, for ``--metric-script``.

Samples must alternate the two sentences of each STS-B test pair, in file order: exactly what
``python models/prepare.py minilm_l6_v2 --split eval --out DIR`` writes (use an even ``--limit``).
onnxq calls ``metric(outputs)`` with, per sample, the list of model outputs (here the [1, 384] embedding).
``ONNXQ_METRIC_SPLIT=calib`` takes the gold scores of ``sts-train.csv`` instead (pairs held out from the
test pairs: search the fallback there, evaluate on the test split).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for models/

from models import common  # noqa: E402
from models import minilm_l6_v2 as minilm  # noqa: E402

FILES = {"eval": "sts-test.csv", "calib": "sts-train.csv"}


def metric(outputs: list[list[np.ndarray]]) -> float:
    if len(outputs) % 2:
        raise ValueError(f"{len(outputs)} samples: sentence pairs need an even number")
    split = os.environ.get("ONNXQ_METRIC_SPLIT", "eval")
    if split not in FILES:
        raise ValueError(f"ONNXQ_METRIC_SPLIT={split!r}: use one of {', '.join(FILES)}")
    pairs = minilm.read_sts(common.data_path(None, "stsb", FILES[split]))[: len(outputs) // 2]
    gold = np.array([g for g, _, _ in pairs])
    emb = np.concatenate([o[0] for o in outputs])
    return 100.0 * common.spearman(minilm.pair_cosines(emb), gold)
