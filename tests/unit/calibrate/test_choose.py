"""onnxq.calibrate.choose: the auto candidates differ from the user's config in the method only."""

from __future__ import annotations

import dataclasses

from onnxq.calibrate.choose import candidate_configs
from onnxq.config import ActivationSpec, Method, QuantConfig, WeightSpec


def test_candidates_keep_every_other_setting():
    config = QuantConfig(
        target="ort-cpu", activations=ActivationSpec(method="auto", percentile=99.9, num_bins=1024, guard_ratio=None),
        weights=WeightSpec(method="mse", bias_correction=False), exclude_ops=("Softmax",), seed=3,
    )
    candidates = candidate_configs(config)
    assert [name for name, _ in candidates] == ["minmax", "percentile", "mse", "entropy"]
    for name, c in candidates:
        assert c.activations.method is Method(name)
        assert c == dataclasses.replace(config, activations=dataclasses.replace(config.activations, method=name))
        assert c.activations.percentile == 99.9 and c.weights == config.weights and c.target == config.target


def test_any_method_in_the_config_is_replaced():
    names = [c.activations.method for _, c in candidate_configs(QuantConfig())]
    assert names == [Method.MINMAX, Method.PERCENTILE, Method.MSE, Method.ENTROPY]
