"""The package stack: each onnxq module imports only from its own layer or the layers below it.

Every import statement counts, at module level or inside a function (a lazy import is still a
dependency: it only hides a cycle until the function runs), and so does one under ``TYPE_CHECKING``.
A module the table does not place fails the test: a new package declares its layer here.

Where the modules outside the pipeline sit, and why:

* ``cores`` (usable CPU count) imports nothing and serves collect and calibrate: the leaf.
* ``formats`` (the quantize/dequantize arithmetic) and ``records`` (what stages exchange) are the leaf
  with ``errors`` and ``config``, so that every stage can use them and they can use no stage.
* ``io`` (model and file I/O) sits just above ``graph`` (it sizes tensors with ``graph.size``) and below
  ``runtime``, which spills models over 2 GB through ``io.save_external``; ``check`` (validation runs
  onnxruntime, then ``io.write_model``) sits above both. All three are below the stages that use them.
* ``testing`` (helpers tests and users share) uses ``analysis.metrics``: the ``api`` layer, with the
  package root (``onnxq/__init__.py``, the public surface, which imports ``api``).
* ``demo`` (the embedded model and rendered text lines) serves only ``onnxq demo``: the ``cli`` layer,
  with ``__main__``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import onnxq

# lowest first; a module may import its own layer and every layer before it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("onnxq.errors", "onnxq.config", "onnxq.records", "onnxq.formats", "onnxq.cores"),
    ("onnxq.graph",),
    ("onnxq.io",),
    ("onnxq.runtime",),
    ("onnxq.check",),
    ("onnxq.preprocess",),
    ("onnxq.placement",),
    ("onnxq.collect",),
    ("onnxq.calibrate",),
    ("onnxq.rewrite",),
    ("onnxq.analysis",),
    ("onnxq.report",),
    ("onnxq", "onnxq.api", "onnxq.testing"),
    ("onnxq.cli", "onnxq.__main__", "onnxq.demo"),
)
ROOT = Path(onnxq.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    """The layer of ``module``: its own entry, else the entry of the package holding it."""
    for name in (module.rsplit(".", k)[0] for k in range(module.count(".") + 1)):
        for level, members in enumerate(LAYERS):
            if name in members:
                return level
    raise AssertionError(f"{module} has no layer: add it (or its package) to LAYERS in {__file__}")


def _resolve(node: ast.ImportFrom, importer: str) -> str:
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rsplit(".", 1)[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imported_modules(module: str) -> set[tuple[str, int]]:
    """The onnxq modules ``module`` imports anywhere in its source, with the line of each import.

    ``from package import name`` is the submodule ``package.name`` when there is one, else ``package``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add((sub if sub in MODULES else base, node.lineno))
    return {(name, line) for name, line in out if name == "onnxq" or name.startswith("onnxq.")}


def test_every_module_imports() -> None:
    """Importing each module on its own works (no cycle that only an import order hides)."""
    names = [m.name for m in pkgutil.walk_packages(onnxq.__path__, "onnxq.")]
    assert set(names) | {"onnxq"} >= set(MODULES) - {"onnxq.__main__"}
    for name in sorted(MODULES):
        if name != "onnxq.__main__":  # runs the CLI
            importlib.import_module(name)


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_higher_layer(module: str) -> None:
    level = layer_of(module)
    upward = sorted(f"{name} (line {line}, layer {layer_of(name)} > {level})"
                    for name, line in imported_modules(module) if layer_of(name) > level)
    assert not upward, f"{module} imports from above its layer: {', '.join(upward)}"


def test_the_check_sees_lazy_and_type_only_imports(tmp_path) -> None:
    """The AST walk finds imports inside functions and under TYPE_CHECKING, not only at the top."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from onnxq.api import quantize\n"
              "def f():\n    import onnxq.cli\n    from onnxq.report import render\n")
    MODULES["onnxq.errors_probe"] = path = tmp_path / "probe.py"
    try:
        path.write_text(source)
        names = {name for name, _ in imported_modules("onnxq.errors_probe")}
    finally:
        del MODULES["onnxq.errors_probe"]
    assert names == {"onnxq.api", "onnxq.cli", "onnxq.report.render"}
    assert max(layer_of(n) for n in names) > layer_of("onnxq.errors")
