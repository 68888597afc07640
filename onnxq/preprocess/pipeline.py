"""Run the float-graph passes in order and say what each one did.

Order matters: the opset upgrade comes first so every later pass (and the rest of onnxq) sees opset-13
ops; folding comes before the final shape inference so computed Reshape targets are constants by then;
BN folding comes last so that BN parameters computed by Constant nodes are initializers when it looks.

Each pass is a pure ``ModelProto -> ModelProto`` function. The notes are derived here by comparing the
model before and after a pass (opset, node counts per op type), so the passes stay free of reporting.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import onnx

from onnxq.errors import ConfigError
from onnxq.preprocess.bn_fold import fold_batchnorms
from onnxq.preprocess.cleanup import fold_constants
from onnxq.preprocess.opset import default_opset, upgrade_opset
from onnxq.preprocess.pad_fold import fold_pads
from onnxq.preprocess.shapes import annotate_shapes

logger = logging.getLogger(__name__)

PER_CHANNEL_OPSET = 13
_BN = "BatchNormalization"


@dataclass(frozen=True)
class PreprocessOptions:
    """Which passes run. ``min_opset``: the default-domain opset models are upgraded to (>= 10)."""

    upgrade_opset: bool = True
    fold_constants: bool = True
    infer_shapes: bool = True
    fold_batchnorm: bool = True
    fold_pads: bool = True
    min_opset: int = PER_CHANNEL_OPSET

    def __post_init__(self) -> None:
        latest = onnx.defs.onnx_opset_version()
        if isinstance(self.min_opset, bool) or not isinstance(self.min_opset, int):
            raise ConfigError(f"min_opset must be an integer, got {self.min_opset!r}; use e.g. 13")
        if not 10 <= self.min_opset <= latest:
            raise ConfigError(
                f"min_opset {self.min_opset} is out of range; use a value from 10 (first opset with "
                f"QuantizeLinear) to {latest}, 13 or more for per-channel weights"
            )


def preprocess(
    model: onnx.ModelProto, options: PreprocessOptions | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """Return a preprocessed copy of ``model`` and human-readable notes of what was done.

    ``model`` is never modified. Its tensors must be in memory (external data loaded).
    """
    options = options or PreprocessOptions()
    work = model  # each pass returns a new model or its input unchanged; folding makes the copy we own
    notes: list[str] = []
    if options.upgrade_opset:
        work = _run_upgrade(work, options.min_opset, notes)
    if options.fold_constants:
        before = _op_counts(work)
        work = fold_constants(work)
        notes.extend(_cleanup_notes(before, _op_counts(work)))
    # graphsurgeon's export renames the tensors it was given: the later passes must not see ``model``'s
    work = _owned(work, model)
    if options.fold_pads:
        work, folded_pads = fold_pads(work)
        if folded_pads:
            notes.append(f"folded {folded_pads} zero Pad into Conv padding")
    if options.infer_shapes:
        annotate_shapes(work)  # on a light copy, also for models over 2 GB (see shapes.py)
    if options.fold_batchnorm:
        folded = fold_batchnorms(work)
        notes.extend(_bn_notes(work, folded))
        work = folded
    for note in notes:
        logger.info("preprocess: %s", note)
    return work, notes


def _owned(work: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    """``work``, or a copy of it when it is still the caller's ``model`` (which must stay unmodified)."""
    if work is not model:
        return work
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _run_upgrade(model: onnx.ModelProto, min_opset: int, notes: list[str]) -> onnx.ModelProto:
    before = default_opset(model)
    model = upgrade_opset(model, min_opset)
    after = default_opset(model)
    if before != after:
        why = " (per-channel Q/DQ needs axis)" if after == PER_CHANNEL_OPSET else ""
        notes.append(f"opset {before} -> {after}{why}")
    return model


def _op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def _cleanup_notes(before: Counter[str], after: Counter[str]) -> list[str]:
    removed = before - after
    added = after - before
    total = sum(before.values()) - sum(after.values())
    if not removed and not added:
        return []
    detail = ", ".join(f"{op} {count}" for op, count in removed.most_common())
    plural = "" if total == 1 else "s"
    note = f"folded constants and removed dead nodes: {total} node{plural} fewer ({detail})"
    if added:
        note += "; added " + ", ".join(f"{op} {count}" for op, count in added.most_common())
    return [note]


def _bn_notes(before: onnx.ModelProto, after: onnx.ModelProto) -> list[str]:
    """A folded BN's output keeps its name and is now written by the node it was folded into."""
    bn_outputs = [n.output[0] for n in before.graph.node if n.op_type == _BN]
    producer = {out: node.op_type for node in after.graph.node for out in node.output}
    into = Counter(producer[name] for name in bn_outputs if producer.get(name, _BN) != _BN)
    notes = []
    if len(into) == 1:
        notes.append(f"folded {sum(into.values())} BatchNormalization into {next(iter(into))}")
    elif into:
        detail = ", ".join(f"{count} into {op}" for op, count in into.most_common())
        notes.append(f"folded {sum(into.values())} BatchNormalization: {detail}")
    left = len(bn_outputs) - sum(into.values())
    if left:
        notes.append(
            f"{left} BatchNormalization left unfolded (no foldable producer, shared output, "
            "non-constant or training-mode BN; the debug log says which)"
        )
    return notes
