"""Feeds from a folder of sample files: ``.npy`` (one array per sample) or ``.npz`` (one per sample, keyed
by input name), read lazily in sorted name order and never with pickle; and the folder helpers the image
source shares (:mod:`onnxq.collect.images`).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.collect.feeds import DataSource, Feed, InputSpec, PathArg
from onnxq.collect.validate import validate_feed
from onnxq.errors import CalibrationDataError, one_line


def existing_dir(path: PathArg, what: str) -> Path:
    """``path`` as a folder, or a CalibrationDataError saying what was expected there."""
    folder = Path(path)
    if not folder.exists():
        raise CalibrationDataError(f"{what} folder '{folder}' does not exist; check the path")
    if not folder.is_dir():
        raise CalibrationDataError(f"'{folder}' is a file, not a folder; pass the folder holding the {what}")
    return folder


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files directly in ``folder`` whose suffix (any case) is in ``suffixes``, by sorted name."""
    return sorted((f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in suffixes),
                  key=lambda f: f.name)


def from_dir(path: PathArg, specs: Sequence[InputSpec]) -> DataSource:
    """Feeds from a folder of ``.npy`` files (single-input models: one array per file) or ``.npz``
    files (one per sample, keyed by input name). An array with one dim fewer than the input's rank
    gets a batch axis of 1. Files are read lazily, in sorted name order, never with pickle."""
    specs = tuple(specs)
    folder = existing_dir(path, "calibration data")
    names = ", ".join(s.name for s in specs)
    files = list_files(folder, (".npy", ".npz"))
    if not files:
        raise CalibrationDataError(
            f"no .npy or .npz files in '{folder}'; expected one .npy per sample (single-input models) "
            f"or one .npz per sample holding arrays named after the inputs ({names})")
    kinds = {f.suffix.lower() for f in files}
    if len(kinds) > 1:
        raise CalibrationDataError(f"'{folder}' mixes .npy and .npz files; keep one kind per folder")
    if kinds == {".npy"} and len(specs) != 1:
        raise CalibrationDataError(
            f"'{folder}' holds .npy files, which feed a single-input model, but this model has "
            f"{len(specs)} inputs ({names}); save one .npz per sample: np.savez(f, **{{name: array}})")
    load = _load_npy if kinds == {".npy"} else _load_npz

    def opener() -> Iterator[Feed]:
        converted: set = set()
        for index, file in enumerate(files):
            feed = load(file, specs)
            yield validate_feed(feed, specs, index, origin=file.name, converted=converted, check_batch=False)

    return DataSource(opener, f"{len(files)} {kinds.pop()} files in {path}", len(files))


def _np_load(file: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        with open(file, "rb") as stream:
            magic = stream.read(6)
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
            raise ValueError("no .npy or .npz header")
        data = np.load(file, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {key: data[key] for key in data.files}
        return data
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CalibrationDataError(
                f"'{file}' holds Python objects, which onnxq never unpickles; save numeric arrays "
                "(np.save / np.savez with numeric dtypes)") from exc
        raise CalibrationDataError(f"cannot read '{file}': {one_line(exc)}; re-save it with numpy") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CalibrationDataError(f"cannot read '{file}': {one_line(exc)}; re-save it with numpy") from exc


def _with_batch_axis(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.shape is not None and array.ndim == len(spec.shape) - 1:
        return array[np.newaxis]
    return array


def _load_npy(file: Path, specs: tuple[InputSpec, ...]) -> dict[str, Any]:
    array = _np_load(file)
    if isinstance(array, dict):
        raise CalibrationDataError(f"'{file}' is an .npz archive named .npy; rename it to .npz")
    return {specs[0].name: _with_batch_axis(array, specs[0])}


def _load_npz(file: Path, specs: tuple[InputSpec, ...]) -> dict[str, Any]:
    arrays = _np_load(file)
    if not isinstance(arrays, dict):
        raise CalibrationDataError(f"'{file}' is a plain .npy array named .npz; rename it to .npy")
    if arrays and all(re.fullmatch(r"arr_\d+", k) for k in arrays) and not any(
            s.name in arrays for s in specs):
        names = ", ".join(f"{s.name}=..." for s in specs)
        raise CalibrationDataError(
            f"'{file}' holds unnamed arrays ({', '.join(arrays)}); save them by input name: "
            f"np.savez(path, {names})")
    by_name = {s.name: s for s in specs}
    return {k: _with_batch_axis(v, by_name[k]) if k in by_name else v for k, v in arrays.items()}
