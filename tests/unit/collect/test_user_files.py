"""collect.user_files: the one loader of a user's Python file (load_data() and metric scripts)."""

from __future__ import annotations

import sys

import pytest

from onnxq.cli.scripts import load_metric_script
from onnxq.collect.python_sources import from_script
from onnxq.collect.user_files import load_user_file
from onnxq.errors import CalibrationDataError, ConfigError


def _load(path):
    return load_user_file(path, what="test script", error=ConfigError, missing_hint="pass a real one")


def test_loads_a_module_that_imports_its_neighbour_and_defines_a_dataclass(tmp_path):
    (tmp_path / "neighbour_for_user_files.py").write_text("VALUE = 7\n")
    (tmp_path / "s.py").write_text(
        "import dataclasses\nfrom neighbour_for_user_files import VALUE\n\n"
        "@dataclasses.dataclass\nclass Box:\n    v: int = VALUE\n")
    path_before, modules_before = list(sys.path), set(sys.modules)
    module = _load(tmp_path / "s.py")
    assert module.Box().v == 7
    assert sys.path == path_before  # the script's folder is on sys.path only while it runs
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("onnxq_test_script_")}
    sys.modules.pop("neighbour_for_user_files", None)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^test script '.*missing.py' does not exist; pass a real one$"):
        _load(tmp_path / "missing.py")


def test_syntax_error_names_the_line(tmp_path):
    (tmp_path / "bad.py").write_text("x = 1\ndef f(:\n")
    with pytest.raises(ConfigError, match=r"^test script 'bad.py' line 2 failed while loading: SyntaxError"):
        _load(tmp_path / "bad.py")


def test_exception_while_importing_names_the_line_and_is_one_line(tmp_path):
    (tmp_path / "boom.py").write_text("x = 1\n\nraise KeyError('no such file')\n")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path / "boom.py")
    message = str(err.value)
    assert message.startswith("test script 'boom.py' line 3 failed while loading: KeyError: 'no such file'; ")
    assert "\n" not in message


def test_each_caller_keeps_its_error_kind_and_words(tmp_path):
    (tmp_path / "bad.py").write_text("1 / 0\n")
    with pytest.raises(CalibrationDataError, match="calibration script 'bad.py' line 1 failed while loading"):
        from_script(tmp_path / "bad.py")
    with pytest.raises(ConfigError, match="metric script 'bad.py' line 1 failed while loading: ZeroDivisionError"):
        load_metric_script(tmp_path / "bad.py")
    with pytest.raises(ConfigError, match="metric script '.*nope.py' does not exist; pass a Python file"):
        load_metric_script(tmp_path / "nope.py")
