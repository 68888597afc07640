"""Load a Python file the user names as a module: the one place onnxq runs a user's file.

Used for ``load_data()`` scripts (``--calib-script``, ``--data-script``, :mod:`onnxq.collect.python_sources`)
and metric scripts (``--metric-script``, :mod:`onnxq.cli.scripts`). Why one place: every such file should
load the same way (its folder importable, so it can use its neighbours; registered while it runs, so it can
define dataclasses) and fail the same way: a one-line error naming the file, the line in it and the
exception, never a traceback from deep inside onnxq. The caller chooses the error kind (a data script's
failure is a CalibrationDataError, a metric script's a ConfigError) and the words naming the file.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from onnxq.errors import OnnxqError, one_line


def load_user_file(path: str | Path, *, what: str, error: type[OnnxqError], missing_hint: str) -> ModuleType:
    """Execute the Python file ``path`` as a new module and return it.

    ``what`` names the file in messages (``"metric script"``); ``error`` is raised, with one line, when
    the file does not exist (``missing_hint``: what to pass instead) or its code fails while it loads (a
    syntax error, an exception at import; the line in the file is named). While the file runs, its folder
    is first on sys.path and the module is in sys.modules; both are undone afterwards.
    """
    script = Path(path)
    if not script.is_file():
        raise error(f"{what} '{script}' does not exist; {missing_hint}")
    name = f"onnxq_{what.replace(' ', '_')}_{abs(hash(str(script.resolve())))}"
    spec = importlib.util.spec_from_file_location(
        name, script, loader=importlib.machinery.SourceFileLoader(name, str(script)))
    module = importlib.util.module_from_spec(spec)
    folder = str(script.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise user_code_error(script, what, "loading", exc, error) from exc
    finally:
        sys.modules.pop(name, None)
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def user_code_error(script: Path, what: str, during: str, exc: BaseException,
                    error: type[OnnxqError]) -> OnnxqError:
    """``error`` for ``exc`` raised by the user's code in ``script`` while ``during`` (``"loading"``,
    ``"calling load_data()"``): the file, the deepest line of it in the traceback, the exception."""
    line = exc.lineno if isinstance(exc, SyntaxError) else None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == script.resolve():
            line = frame.lineno
    at = f" line {line}" if line else ""
    return error(f"{what} '{script.name}'{at} failed while {during}: {type(exc).__name__}: {one_line(exc)}; "
                 "fix the script (run it with python to see the full traceback)")
