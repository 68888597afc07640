"""Every command the README, models/README.md and examples/ show runs here, with the figures they print.

``test_every_documented_command_has_a_test`` scans the documents for command lines (``onnxq ...``,
``python examples/...``, ``python models/prepare.py ...``) and fails when one is not in ``COVERED``: a
command added to a document without a test fails the suite. A README block written as a terminal session
(``$ onnxq ...`` followed by its output) is run as printed and its output compared line by line: words
exactly, counts exactly, measured figures within a tolerance. Commands on real models skip when the model
or ``ONNXQ_DATA`` is absent; the embedded demo model always runs.
"""

from __future__ import annotations

import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import DATA, MODELS, REPO
from PIL import Image

from onnxq.cli import main
from onnxq.testing import model_from_text

DOCS = [REPO / "README.md", REPO / "models" / "README.md", REPO / "benchmarks" / "README.md"]

# Lines of the CLI reference are synopses ("[data]", "A|B"), not commands; everything else is run below.
COVERED = {
    "pip install . && onnxq demo": "test_demo_command",
    'python -m pip install -q -e ".[test]" && python -m pytest': "test_ci_runs_the_readme_test_command",
    "onnxq quantize models/.cache/efficientnet_lite0.onnx -o effnet.int8.onnx --calib-data "
    "../shared/data/imagenet-sample/calib --short-side 256 --interpolation bicubic --pixel-scale 1 --mean 127 "
    "--std 128": "test_readme_terminal_sessions",
    "python models/prepare.py efficientnet_lite0 --split calib --out /tmp/calib":
        "test_models_readme_prepare_then_quantize",
    "onnxq quantize models/.cache/efficientnet_lite0.onnx -o /tmp/q.onnx --calib-data /tmp/calib":
        "test_models_readme_prepare_then_quantize",
    "python models/build_all.py": "test_models_readme_build_all",
    "python models/build_all.py --only efficientnet_lite0 --no-eval": "test_models_readme_build_all",
}
# Environment set-up for the model recipes (models/README.md): installs, not onnxq commands.
SETUP = ("pip install torch==", "pip install transformers ", "pip install --no-deps ")


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    """Command lines of a shell block: continuations joined, comments and prompts dropped. In a terminal
    session (a block whose first line starts with ``$ ``) only prompted lines are commands."""
    lines, current = [], ""
    session = block.startswith("$ ")
    for raw in block.splitlines():
        line = raw.split("  #")[0].rstrip()
        if session and not current and not line.startswith("$ "):
            continue  # output
        if line.startswith("$ "):
            line = line[2:]
        current = f"{current} {line.strip()}" if current else line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current.startswith(("onnxq ", "pip ", "python ")) or "onnxq " in current.split("&&")[-1]:
            lines.append(" ".join(current.split()))
        current = ""
    return lines


def _is_synopsis(command: str) -> bool:
    return "[" in command or "|" in command or command.split()[1:2] in (["MODEL"], ["FLOAT.onnx"])


def documented_commands() -> list[str]:
    found = []
    for doc in DOCS:
        for block in _code_blocks(doc.read_text()):
            if block.lstrip().startswith(("import ", "from ")):
                continue  # Python
            found += [c for c in _commands(block) if not _is_synopsis(c)]
    return found


def test_every_documented_command_has_a_test():
    missing = [c for c in documented_commands()
               if c not in COVERED and not c.startswith(("python benchmarks/", *SETUP))]
    assert not missing, "documented commands without a test (add them to COVERED and test them): " + "; ".join(missing)
    names = set(globals())
    assert set(COVERED.values()) <= names


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    command = 'python -m pip install -q -e ".[test]" && python -m pytest'
    assert command in (REPO / "README.md").read_text()
    assert any(line.strip() == command for line in ci.splitlines())


# ---------------------------------------------------------------------------------------------------
# terminal sessions in the README: run as printed, compare the output


def _sessions(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of every ``$ onnxq`` block."""
    out = []
    for block in _code_blocks(text):
        if not block.startswith("$ onnxq"):
            continue
        lines = block.splitlines()
        k = 0
        while lines[k].rstrip().endswith("\\"):
            k += 1
        out.append((_commands("\n".join(lines[: k + 1]))[0], lines[k + 1:]))
    return out


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def assert_output_matches(expected: list[str], actual: list[str]) -> None:
    """Same keys and words; integers equal; decimals within 2 % (or 0.005 for values under 1)."""
    got: dict[str, list[str]] = {}
    for line in actual:
        if line.strip():
            got.setdefault(line.split()[0], []).append(line)  # a key may repeat (preprocess): in order
    for line in expected:
        key = line.split()[0]
        if key in ("timings", "wrote"):
            continue  # wall times; the output path is the test's own
        assert got.get(key), f"README line {key!r} missing from the output:\n" + "\n".join(actual)
        want, have = got[key].pop(0), line
        assert _NUMBER.sub("#", want) == _NUMBER.sub("#", have), f"README: {have}\nactual: {want}"
        for a, b in zip(_NUMBER.findall(have), _NUMBER.findall(want), strict=True):
            if "." in a:
                tol = 0.005 if abs(float(a)) < 1 else 0.02 * abs(float(a))
                assert abs(float(a) - float(b)) <= tol, f"README: {have}\nactual: {want}"
            else:
                assert a == b, f"README: {have}\nactual: {want}"


def _local(command: str, tmp_path: Path) -> list[str] | None:
    """The command's arguments with the README's paths mapped to this checkout; None when inputs are absent."""
    args = shlex.split(command)[1:]
    out = []
    for k, arg in enumerate(args):
        if arg.startswith("../shared/data/"):
            arg = str(DATA / arg.removeprefix("../shared/data/"))
        elif arg.startswith("models/.cache/"):
            arg = str(MODELS / arg.removeprefix("models/.cache/"))
        elif k > 0 and args[k - 1] in ("-o", "--output"):
            arg = str(tmp_path / arg)
        if "/" in arg and not arg.startswith("-") and args[k - 1] not in ("-o", "--output") \
                and not Path(arg).exists():
            return None
        out.append(arg)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_sessions((REPO / "README.md").read_text()))))
def test_readme_terminal_sessions(index, tmp_path, capsys, monkeypatch):
    command, expected = _sessions((REPO / "README.md").read_text())[index]
    args = _local(command, tmp_path)
    if args is None:
        pytest.skip(f"inputs of `{command[:60]}...` absent (build models/, set ONNXQ_DATA)")
    monkeypatch.chdir(REPO)  # the README's relative paths
    assert main(args) == 0
    actual = capsys.readouterr().out.splitlines()
    # the README prints paths as typed; the run prints the mapped ones
    actual = [line.replace(str(DATA), "../shared/data").replace(str(MODELS), "models/.cache") for line in actual]
    assert_output_matches(expected, actual)


@pytest.mark.slow
def test_demo_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo writes its model into the current folder by default
    assert main(["demo"]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "onnxq-demo.int8.onnx").exists()
    line = next(ln for ln in text.splitlines() if ln.startswith("accuracy"))
    floats = [float(v) for v in re.findall(r"(\d+\.\d) %", line)]
    assert len(floats) == 3 and floats[1] >= floats[0] - 3.0 and floats[2] >= 95.0, line


# ---------------------------------------------------------------------------------------------------
# examples/


def _input_model(path: Path) -> Path:
    """A tiny conv net whose input is named like the examples' (``input``, [N, 3, 224, 224])."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,224,224] input) => (float[N,4,1,1] y) {
      c = Conv <strides=[8,8]> (input, W, B)
      r = Relu (c)
      y = GlobalAveragePool (r)
    }
    """
    onnx.save(model_from_text(text, weights={"W": (4, 3, 8, 8), "B": (4,)}), str(path))
    return path


def test_example_load_data_script(tmp_path, capsys):
    model = _input_model(tmp_path / "m.onnx")
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(model), "-o", str(out), "--calib-script", str(REPO / "examples" / "load_data.py"),
                 "--format", "json"])
    assert code == 0 and out.exists()
    assert '"samples": 16' in capsys.readouterr().out  # the script yields 16 samples


def test_example_quantize_from_python(tmp_path, capsys, monkeypatch):
    model = _input_model(tmp_path / "m.onnx")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (240, 260, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    out = tmp_path / "q.onnx"
    monkeypatch.setattr(sys, "argv", ["quantize_from_python.py", str(model), str(images), str(out)])
    runpy.run_path(str(REPO / "examples" / "quantize_from_python.py"), run_name="__main__")
    text = capsys.readouterr().out
    match = re.search(r"quantized (\d+) nodes; sample output cosine ([\d.]+); wrote", text)
    assert match and int(match.group(1)) == 1 and float(match.group(2)) > 0.99, text
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_every_example_is_tested():
    tested = {"load_data.py", "quantize_from_python.py"}
    metrics = {p.name for p in (REPO / "examples" / "metrics").glob("*.py")}
    assert {p.name for p in (REPO / "examples").glob("*.py")} == tested
    assert metrics <= set(METRIC_EXAMPLES), f"metric scripts without a test: {sorted(metrics - set(METRIC_EXAMPLES))}"


# metric script -> (model key, data folder under ONNXQ_DATA, prepare split) used by test_metric_examples
METRIC_EXAMPLES = {
    "ppocr_cls_accuracy.py": "ppocr_cls",
    "efficientnet_agreement.py": "efficientnet_lite0",
    "minilm_spearman.py": "minilm_l6_v2",
    "ppocr_det_hmean.py": "ppocr_det",
    "yolox_map.py": "yolox_nano",
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(METRIC_EXAMPLES))
def test_metric_examples(script, tmp_path, capsys):
    """Each metric script scores the float model through ``onnxq sensitivity --metric-script`` on a few
    evaluation samples prepared by models/prepare.py, as examples/metrics/ describe."""
    key = METRIC_EXAMPLES[script]
    model = MODELS / f"{key}.onnx"
    if not model.exists() or not DATA.exists():
        pytest.skip(f"{key} not built or ONNXQ_DATA absent")
    sys.path.insert(0, str(REPO))
    try:
        from models.prepare import main as prepare
    finally:
        sys.path.remove(str(REPO))
    data = tmp_path / "eval"
    limit = 8
    assert prepare([key, "--split", "eval", "--out", str(data), "--limit", str(limit)]) in (0, None)
    capsys.readouterr()
    code = main(["compare", str(model), str(model), "--data", str(data), "--metric-script",
                 str(REPO / "examples" / "metrics" / script), "--format", "json"])
    assert code == 0
    import json

    report = json.loads(capsys.readouterr().out)
    metric = report["metric"]
    assert metric["float_score"] == metric["quant_score"] and metric["loss_pct"] == 0  # the model against itself


@pytest.mark.slow
def test_models_readme_prepare_then_quantize(tmp_path, capsys):
    model = MODELS / "efficientnet_lite0.onnx"
    if not model.exists() or not DATA.exists():
        pytest.skip("efficientnet_lite0 not built or ONNXQ_DATA absent")
    sys.path.insert(0, str(REPO))
    try:
        from models.prepare import main as prepare
    finally:
        sys.path.remove(str(REPO))
    calib = tmp_path / "calib"
    assert prepare(["efficientnet_lite0", "--split", "calib", "--out", str(calib)]) in (0, None)
    assert len(list(calib.glob("*.npz"))) == 100
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(model), "-o", str(out), "--calib-data", str(calib)]) == 0
    text = capsys.readouterr().out
    # auto (the default) scores each method on the 20 feeds it held out; the final ranges use all 100
    assert "quantized  59 nodes" in text and "(100 samples)" in text and "on 20 of 100 calibration feeds held out" in text


@pytest.mark.slow
def test_models_readme_build_all(tmp_path, capsys):
    """``build_all.py``: the copy recipe (YOLOX-Nano, from the shared models) builds and evaluates; the torch
    recipes run where torch and their wheels are installed (models/README.md) and are skipped otherwise."""
    sys.path.insert(0, str(REPO))
    try:
        from models.build_all import main as build_all
    finally:
        sys.path.remove(str(REPO))
    if not (DATA.parent / "models" / "yolox_nano.onnx").exists():
        pytest.skip("shared YOLOX-Nano absent")
    assert build_all(["--only", "yolox_nano", "--no-eval", "--cache", str(tmp_path)]) == 0
    assert (tmp_path / "yolox_nano.onnx").exists() and "yolox_nano" in capsys.readouterr().out
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    assert build_all(["--only", "efficientnet_lite0", "--no-eval", "--cache", str(tmp_path)]) == 0
    assert (tmp_path / "efficientnet_lite0.onnx").exists()
