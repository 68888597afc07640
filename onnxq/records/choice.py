"""What ``--method auto`` chose and why: a record the report renders and the JSON carries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OutputFigure:
    """One graph output of the chosen model on the scoring samples: its whole-tensor SQNR and its worst
    slice (a channel, a feature column, a class score) with the slice's SQNR."""

    output: str
    sqnr_db: float
    worst_slice: str  # e.g. "axis 2 index 17", or "" for an output scored whole
    worst_sqnr_db: float
    tail_sqnr_db: float | None = None  # the 5 % quantile of its slices (analysis.heldout.OutputScore.tail_db)


@dataclass(frozen=True)
class MethodChoice:
    """The activation calibration method ``auto`` kept, the score of every candidate, and on what data.

    ``score_db`` is the worst slice SQNR over all outputs (the higher the better): one norm over a whole
    output hides a destroyed part of it (class scores next to box coordinates). ``held_out`` says whether
    the scoring samples were kept out of range estimation (too few samples: they were not).
    """

    chosen: str
    scores: tuple[tuple[str, float], ...]  # (method, score_db) for every candidate, in candidate order
    scoring: str  # which samples scored the candidates, e.g. "8 of 40 calibration feeds held out"
    held_out: bool
    outputs: tuple[OutputFigure, ...] = ()
    reason: str = ""  # why no scoring ran, when it did not (e.g. statistics given without data)
    method: str = ""  # the activation method of the kept candidate ("mse" for "mse + equalize")
    equalized: bool = False  # whether the kept candidate has equalized depthwise inputs
    by_metric: bool = False  # ``scores`` are the user's --metric-script values (higher is better), not dB
    feeds: int = 0  # how many feeds scored the candidates
    log_probability_outputs: tuple[str, ...] = ()  # outputs of probabilities, ranked on centred log-probabilities

    @property
    def score_db(self) -> float | None:
        return dict(self.scores).get(self.chosen)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
