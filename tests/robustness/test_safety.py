"""Safety: no pickle anywhere, config files are data, user code runs only when the user names it.

The behavioural tests plant a payload that would create a marker file if it ever ran (a pickle whose
``__reduce__`` calls ``open``, Python code in a config file or beside the data) and check the marker
never appears; the static test reads onnxq's source for every ``np.load`` and unsafe loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
import robust_models as rm
from helpers import save_random_arrays

import onnxq
from onnxq.cli import main
from onnxq.collect.stats_file import load_stats
from onnxq.errors import CalibrationDataError, ConfigError

PACKAGE = Path(onnxq.__file__).resolve().parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib", "torch"}


class _Payload:
    """Unpickling this object opens (creates) ``path``: proof that a loader ran pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _sources() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_pickle_or_code_execution_in_the_package() -> None:
    problems = []
    loads = 0
    for path, tree in _sources():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [
                    f"{where}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES
                ]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name in ("eval", "exec") and isinstance(func, ast.Name):
                problems.append(f"{where}:{node.lineno} calls {name}()")
            owner = (
                func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            )
            if name == "load" and owner in ("np", "numpy"):
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                flag = kw.get("allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where}:{node.lineno} np.load without allow_pickle=False")
            if name == "load" and owner == "yaml":
                problems.append(f"{where}:{node.lineno} yaml.load (use safe_load)")
    assert loads >= 2, "expected the stats and data loaders' np.load calls"
    assert problems == []


def test_pickled_calibration_data_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    model = tmp_path / "m.onnx"
    onnx.save(rm.conv_model(), str(model))
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "000.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "calib_npz.npz", x=np.array([_Payload(marker)], dtype=object))
    code = main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calib-data", str(calib)])
    assert code == 2
    with pytest.raises(CalibrationDataError, match="never unpickles"):
        onnxq.quantize(model, calib)
    assert not marker.exists()
    assert not (tmp_path / "q.onnx").exists()


def test_pickled_statistics_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    stats = tmp_path / "stats.npz"
    np.savez(stats, format=np.array("onnxq-stats"), names=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(CalibrationDataError):
        load_stats(stats)
    model = tmp_path / "m.onnx"
    onnx.save(rm.conv_model(), str(model))
    assert main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--load-stats", str(stats)]) == 2
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, text",
    [
        ("q.py", "open(MARKER, 'w')\n"),
        ("q.toml", "target = \"__import__('builtins').open(MARKER, 'w')\"\n"),
        ("q.json", "{\"target\": \"__import__('builtins').open(MARKER, 'w')\"}"),
        ("q.toml", "[activations]\nmethod = \"!!python/object/apply:builtins.open [MARKER, 'w']\"\n"),
    ],
)
def test_config_files_are_parsed_as_data(tmp_path: Path, name: str, text: str) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / name
    config.write_text(text.replace("MARKER", repr(str(marker))))
    with pytest.raises(ConfigError):
        onnxq.load_config(config)
    model = tmp_path / "m.onnx"
    onnx.save(rm.conv_model(), str(model))
    assert (
        main(
            ["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--random", "2", "--config", str(config)]
        )
        == 2
    )
    assert not marker.exists()


def test_scripts_beside_the_data_or_model_never_run(tmp_path: Path) -> None:
    """A load_data.py in the data folder or next to the model is ignored unless named with --calib-script."""
    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w')\ndef load_data():\n    open({str(marker)!r}, 'w')\n    return []\n"
    calib = save_random_arrays(tmp_path / "calib", 3, (3, 8, 8))
    for where in (
        calib / "load_data.py",
        calib / "__init__.py",
        tmp_path / "load_data.py",
        tmp_path / "conftest.py",
    ):
        where.write_text(payload)
    model = tmp_path / "m.onnx"
    onnx.save(rm.conv_model(), str(model))
    assert (
        main(["-q", "quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calib-data", str(calib)]) == 0
    )
    assert (
        main(["-q", "calibrate", str(model), "-o", str(tmp_path / "s.npz"), "--calib-data", str(calib)]) == 0
    )
    assert main(["-q", "inspect", str(model)]) == 0
    assert not marker.exists()
    # Named explicitly, the same script does run: the rule is "only when asked", not "never".
    script = tmp_path / "named.py"
    script.write_text(payload)
    assert (
        main(["-q", "quantize", str(model), "-o", str(tmp_path / "q2.onnx"), "--calib-script", str(script)])
        == 2
    )
    assert marker.exists()
