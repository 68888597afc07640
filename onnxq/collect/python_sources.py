"""Feeds from Python: ``load_data()`` in a script the user names, or an iterable (list, function, iterator).

User code runs only when the user names it; an error inside it becomes a CalibrationDataError naming the
file, the line and the message, never a traceback from deep inside onnxq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.collect.feeds import DataSource, Feed, PathArg
from onnxq.collect.user_files import load_user_file, user_code_error
from onnxq.errors import CalibrationDataError


def _script_error(script: Path, during: str, exc: BaseException) -> CalibrationDataError:
    return user_code_error(script, "calibration script", during, exc, CalibrationDataError)


def from_script(path: PathArg) -> DataSource:
    """Feeds from ``load_data()`` in a Python file the user names (Polygraphy's convention).

    The file is executed once, here; ``load_data()`` is called again on every iteration, so it should
    return a fresh iterable of feed dicts each time (a generator function does). Errors in the user's
    code become a CalibrationDataError naming the file, the line and the message.
    """
    script = Path(path)
    module = load_user_file(script, what="calibration script", error=CalibrationDataError,
                            missing_hint="pass the path of a Python file that defines load_data()")
    load_data = getattr(module, "load_data", None)
    if not callable(load_data):
        raise CalibrationDataError(
            f"calibration script '{script.name}' defines no load_data() function; add one that yields "
            "feed dicts, e.g. def load_data(): yield {'input': np.zeros((1, 3, 224, 224), np.float32)}")

    def opener() -> Iterator[Feed]:
        try:
            feeds = iter(load_data())
        except Exception as exc:
            raise _script_error(script, "calling load_data()", exc) from exc
        while True:
            try:
                feed = next(feeds)
            except StopIteration:
                return
            except Exception as exc:
                raise _script_error(script, "iterating load_data()", exc) from exc
            yield feed

    return DataSource(opener, f"load_data() from {script.name}", None)


class _Once:
    """Opener for a one-shot iterator: a second pass raises instead of silently yielding nothing."""

    def __init__(self, iterator: Iterator[Feed]) -> None:
        self._iterator, self._used = iterator, False

    def __call__(self) -> Iterator[Feed]:
        if self._used:
            raise CalibrationDataError(
                "this data source wraps an iterator, which can be read only once, and it was already "
                "read; pass a list, or a function that returns a new iterator, to from_iterable")
        self._used = True
        return self._iterator


def _not_a_feed_stream(obj: Any, where: str) -> CalibrationDataError:
    return CalibrationDataError(f"{where} got a {type(obj).__name__}, not an iterable of feed dicts; "
                                "pass e.g. [{'input': array}, ...] (wrap a single feed in a list)")


def from_iterable(obj: Iterable[Feed] | Callable[[], Iterable[Feed]],
                  description: str | None = None) -> DataSource:
    """Feeds from Python: a list (or any re-iterable collection) of feed dicts, a function returning a
    new iterable on each call, or an iterator/generator. An iterator can be consumed only once: a second
    pass raises CalibrationDataError; pass a list or a function when the data is needed twice."""
    if isinstance(obj, DataSource):
        return obj
    if isinstance(obj, (Mapping, np.ndarray, str, bytes)):
        raise _not_a_feed_stream(obj, "from_iterable")
    if isinstance(obj, Iterator):
        return DataSource(_Once(obj), description or "Python iterator (single pass)", None)
    if isinstance(obj, Iterable):
        count = len(obj) if isinstance(obj, Sized) else None
        if count == 0:
            raise CalibrationDataError("from_iterable got an empty collection; give at least one feed")
        what = f"{count} feeds" if count is not None else type(obj).__name__
        return DataSource(lambda: obj, description or f"Python {what}", count)
    if callable(obj):
        def opener() -> Iterable[Feed]:
            feeds = obj()
            if isinstance(feeds, (Mapping, np.ndarray, str, bytes)) or not isinstance(feeds, Iterable):
                raise _not_a_feed_stream(feeds, f"the function {getattr(obj, '__name__', obj)!r}")
            return feeds
        return DataSource(opener, description or f"Python function {getattr(obj, '__name__', '')}()", None)
    raise _not_a_feed_stream(obj, "from_iterable")
