"""User metric scripts (``--metric-script FILE``): one loader for every subcommand.

A metric script defines ``metric(outputs) -> float`` (higher is better; ``outputs[i]`` is the list of the
model's outputs on sample i) or ``metric(outputs_float, outputs_quant) -> (float_score, quant_score)``.
Every subcommand takes both forms: sensitivity and the fallback score one model at a time, compare
scores the pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxq.collect.user_files import load_user_file
from onnxq.errors import ConfigError, one_line


def load_metric_script(path: str | Path) -> Callable[..., Any]:
    """``metric`` from a user's Python file (its code runs here), or a ConfigError naming the fix.

    The returned function keeps ``metric``'s signature (callers read its arity) and turns a failure
    inside it into a one-line ConfigError."""
    script = Path(path)
    module = load_user_file(script, what="metric script", error=ConfigError,
                            missing_hint="pass a Python file defining metric()")
    fn = getattr(module, "metric", None)
    if not callable(fn):
        raise ConfigError(f"metric script '{script.name}' defines no metric() function; add "
                          "def metric(outputs): return score  (higher is better)")

    def checked(*outputs):
        try:
            return fn(*outputs)
        except Exception as exc:
            raise ConfigError(f"metric() in '{script.name}' failed: {type(exc).__name__}: "
                              f"{one_line(exc)}; it receives, per sample, the list of model outputs"
                              ) from exc

    checked.__signature__ = inspect.signature(fn)
    checked.__name__ = script.name
    return checked


def takes_pair(metric: Callable[..., Any]) -> bool:
    """Whether ``metric`` is the two-model form ``metric(outputs_float, outputs_quant)``."""
    params = [p for p in inspect.signature(metric).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(params) >= 2


def pair_metric(metric: Callable[..., Any]) -> Callable[[Any, Any], tuple[float, float]]:
    """Either form of ``metric`` as ``(outputs_float, outputs_quant) -> (float_score, quant_score)``."""
    pair = takes_pair(metric)

    def both(outputs_float, outputs_quant) -> tuple[float, float]:
        result = metric(outputs_float, outputs_quant) if pair else (metric(outputs_float), metric(outputs_quant))
        try:
            f_score, q_score = (float(v) for v in result)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metric() in '{getattr(metric, '__name__', 'the script')}' returned {result!r}: "
                              "metric(outputs) must return a number, metric(outputs_float, outputs_quant) a "
                              "pair (float_score, quant_score)") from exc
        return f_score, q_score

    return both
