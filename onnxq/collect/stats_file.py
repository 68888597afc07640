"""The statistics file: ``save_stats`` / ``load_stats`` of TensorStats as a plain .npz.

Collect once, solve many: ``onnxq calibrate`` writes the statistics and ``quantize --load-stats`` solves
from them with any method. The file is loadable with ``allow_pickle=False`` (numbers and strings only), and
is written atomically by ``onnxq.io.write_atomic``.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from onnxq import io
from onnxq.collect.grid import Histogram
from onnxq.collect.stats import TensorStats
from onnxq.errors import CalibrationDataError

STATS_FORMAT = "onnxq-stats/1"
_MODES = {0: (False, False), 1: (True, False), 2: (True, True)}  # mode -> (has_histogram, signed)
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, CalibrationDataError)


def _stats_arrays(i: int, s: TensorStats) -> dict[str, np.ndarray]:
    mode = 2 if s.signed else int(s.has_histogram)
    exps = [h.exponent if h is not None else 0 for h in (s.hist, s.pos, s.neg)]
    out = {
        f"{i}/info": np.array([s.num_bins, s.count, mode, *exps], np.int64),
        f"{i}/range": np.array([s.min, s.max], np.float64),
        f"{i}/batches": np.asarray(s.batch_ranges, np.float64),
    }
    for key, h in (("counts", s.hist), ("pos", s.pos), ("neg", s.neg)):
        if h is not None:
            out[f"{i}/{key}"] = h.counts
    return out


def save_stats(
    path: str | os.PathLike, stats: dict[str, TensorStats], meta: dict[str, str] | None = None
) -> None:
    """Write ``stats`` (and string metadata) to ``path`` as an .npz, atomically."""
    meta = dict(meta or {})
    arrays: dict[str, np.ndarray] = {
        "format": np.array(STATS_FORMAT),
        "names": np.array(list(stats), dtype=str),
        "meta_keys": np.array([str(k) for k in meta], dtype=str),
        "meta_values": np.array([str(v) for v in meta.values()], dtype=str),
    }
    for i, s in enumerate(stats.values()):
        arrays.update(_stats_arrays(i, s))
    io.write_atomic(path, lambda fh: np.savez(fh, **arrays))


def _read_tensor(data, i: int) -> TensorStats:
    info = np.asarray(data[f"{i}/info"])
    rng = np.asarray(data[f"{i}/range"])
    if info.shape != (6,) or info.dtype.kind != "i" or rng.shape != (2,) or int(info[2]) not in _MODES:
        raise ValueError(f"entry {i} has a bad header")
    num_bins, count, mode, e_hist, e_pos, e_neg = (int(v) for v in info)
    has_hist, signed = _MODES[mode]
    kw: dict[str, Histogram] = {}
    if signed:
        kw = {"pos": Histogram(data[f"{i}/pos"], e_pos), "neg": Histogram(data[f"{i}/neg"], e_neg)}
    elif has_hist:
        kw = {"hist": Histogram(data[f"{i}/counts"], e_hist)}
    lo, hi = float(rng[0]), float(rng[1])
    return TensorStats(num_bins, count, lo, hi, batch_ranges=data[f"{i}/batches"], **kw)


def load_stats(path: str | os.PathLike) -> tuple[dict[str, TensorStats], dict[str, str]]:
    """Read a file written by ``save_stats``: (stats by tensor name, metadata)."""
    path = os.fspath(path)
    fix = "re-create it with `onnxq calibrate ... -o stats.npz`"
    if not os.path.isfile(path):
        raise CalibrationDataError(f"statistics file {path} does not exist; {fix}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            if str(data["format"]) != STATS_FORMAT:
                raise ValueError(f"format {str(data['format'])!r}, expected {STATS_FORMAT!r}")
            names = [str(n) for n in data["names"]]
            meta = {str(k): str(v) for k, v in zip(data["meta_keys"], data["meta_values"], strict=True)}
            stats = {name: _read_tensor(data, i) for i, name in enumerate(names)}
    except _READ_ERRORS as err:
        raise CalibrationDataError(f"{path} is not a valid onnxq statistics file ({err}); {fix}") from err
    return stats, meta
