"""Issue 12, items 5 and 7: options that could not act were accepted silently, and CLI messages spoke in
Python-API terms. Every case runs ``onnxq`` in-process on a tiny model (helpers.CONV_RELU)."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import onnx
import pytest
from helpers import conv_relu, error_line, save_onnx
from PIL import Image

from onnxq.cli import build_parser, main
from onnxq.testing import model_from_text

NHWC = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,3] x) => (float[1,4,8,8] y) {
  t = Transpose <perm=[0,3,1,2]> (x)
  y = Conv <pads=[1,1,1,1]> (t, W, B)
}
"""


def quantize(model, tmp_path, *extra: str, out: str = "q.onnx") -> int:
    return main(["quantize", str(model), "-o", str(tmp_path / out), "--random", "4", *extra])


def weight_scale(path) -> np.ndarray:
    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    dq = producer[conv.input[1]]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    return inits[dq.input[1]]


# --------------------------------------------------------------------------- item 5: silent options


def test_weight_percentile_clips_and_differs_from_max(conv_model, tmp_path):
    """27 weights per channel: the old inverted-cdf percentile returned the max below 10 000 weights."""
    assert quantize(conv_model, tmp_path, "--weight-method", "max", out="max.onnx") == 0
    assert quantize(conv_model, tmp_path, "--weight-method", "percentile", out="p.onnx") == 0
    assert quantize(conv_model, tmp_path, "--weight-method", "percentile", "--weight-percentile", "90",
                    out="p90.onnx") == 0
    s_max, s_p, s_90 = (weight_scale(tmp_path / n) for n in ("max.onnx", "p.onnx", "p90.onnx"))
    assert np.all(s_p < s_max) and np.all(s_90 < s_p)
    config = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "p90.onnx")).metadata_props}
                        ["onnxq.config"])
    assert config["weights"]["percentile"] == 90.0


@pytest.mark.parametrize("flags,needle", [
    (["--method", "minmax", "--percentile", "99.9"], "--percentile applies to --method percentile"),
    (["--weight-percentile", "99.9"], "--weight-percentile applies to --weight-method percentile"),
])
def test_percentile_flags_without_their_method_are_refused(conv_model, tmp_path, capsys, flags, needle):
    assert quantize(conv_model, tmp_path, *flags) == 2
    assert needle in error_line(capsys)
    assert not (tmp_path / "q.onnx").exists()


def test_percentile_acts_with_auto_through_its_percentile_candidate(conv_model, tmp_path, capsys):
    """The default, auto, solves a percentile candidate: --percentile sets it (recorded in the config)."""
    assert quantize(conv_model, tmp_path, "--percentile", "99.9") == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    config = json.loads(meta["onnxq.config"])
    assert (config["activations"]["method"], config["activations"]["percentile"]) == ("auto", 99.9)


def test_weight_format_qdq_is_refused_for_ort_cpu_and_metadata_says_what_was_written(conv_model, tmp_path, capsys):
    assert quantize(conv_model, tmp_path, "--target", "ort-cpu", "--weight-format", "qdq") == 2
    assert "--weight-format qdq is not available with --target ort-cpu" in error_line(capsys)
    assert quantize(conv_model, tmp_path, "--target", "ort-cpu") == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert json.loads(meta["onnxq.config"])["weights"]["format"] == "dq-only"
    # a config recorded for tensorrt (format resolved to qdq) retargeted by --target: the ort-cpu form
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"target": "tensorrt", "weights": {"format": "qdq"}}))
    assert quantize(conv_model, tmp_path, "--config", str(cfg), "--target", "ort-cpu") == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert json.loads(meta["onnxq.config"])["weights"]["format"] == "dq-only"
    # a config file that asks for qdq on ort-cpu itself is refused, naming the key
    cfg.write_text(json.dumps({"target": "ort-cpu", "weights": {"format": "qdq"}}))
    assert quantize(conv_model, tmp_path, "--config", str(cfg)) == 2
    assert "weights format 'qdq' is not available for target 'ort-cpu'" in error_line(capsys)


def test_equalize_with_ort_cpu_is_refused_and_from_a_config_file_warned(conv_model, tmp_path, capsys, caplog):
    assert quantize(conv_model, tmp_path, "--equalize", "--target", "ort-cpu") == 2
    assert "--equalize works with --target tensorrt only" in error_line(capsys)
    cfg = tmp_path / "c.toml"
    cfg.write_text('target = "ort-cpu"\nequalize = true\n')
    with caplog.at_level(logging.WARNING):
        assert quantize(conv_model, tmp_path, "--config", str(cfg)) == 0
    assert "equalize = true" in caplog.text and "not applied" in caplog.text


def test_inspect_does_not_take_equalize_and_a_config_asking_for_it_is_warned(conv_model, tmp_path, capsys, caplog):
    assert main(["inspect", str(conv_model), "--equalize"]) == 2  # inspect reads no data to equalize with
    assert "onnxq inspect does not take --equalize" in error_line(capsys)
    config = tmp_path / "eq.toml"
    config.write_text("equalize = true\n")
    with caplog.at_level(logging.WARNING):
        assert main(["inspect", str(conv_model), "--config", str(config)]) == 0
    assert "without --equalize" in caplog.text and "calibration data" in caplog.text


def test_exclude_op_in_the_wrong_case_is_an_error_naming_the_op(conv_model, tmp_path, capsys):
    assert quantize(conv_model, tmp_path, "--exclude-op", "conv") == 2
    assert "did you mean --exclude-op Conv?" in error_line(capsys)
    assert main(["inspect", str(conv_model), "--exclude-op", "relu"]) == 2
    assert "did you mean --exclude-op Relu?" in error_line(capsys)


def test_exclusions_that_match_nothing_are_warned(conv_model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert quantize(conv_model, tmp_path, "--exclude-op", "LSTM", "--exclude-node", "^nope$",
                        "--exclude-node", "Conv") == 0
    assert "--exclude-op LSTM excludes nothing" in caplog.text
    assert "--exclude-node '^nope$' excludes nothing" in caplog.text
    assert "'Conv' excludes nothing" not in caplog.text  # it matches Conv_0
    with caplog.at_level(logging.WARNING):
        assert main(["inspect", str(conv_model), "--exclude-node", "^typo"]) == 0
    assert "--exclude-node '^typo' excludes nothing" in caplog.text


def test_dim_without_random_is_refused(conv_model, tmp_path, calib_dir, capsys):
    assert main(["quantize", str(conv_model), "-o", str(tmp_path / "q.onnx"), "--calib-data", str(calib_dir),
                 "--dim", "N=2"]) == 2
    assert "--dim N=2 only applies to --random N" in error_line(capsys)
    stats = tmp_path / "s.npz"
    assert main(["calibrate", str(conv_model), "-o", str(stats), "--calib-data", str(calib_dir)]) == 0
    assert main(["quantize", str(conv_model), "-o", str(tmp_path / "q.onnx"), "--load-stats", str(stats),
                 "--dim", "N=2"]) == 2
    assert "only applies to --random" in error_line(capsys)
    assert quantize(conv_model, tmp_path, "--dim", "N=0") == 2
    assert "integer value >= 1" in error_line(capsys)


def test_max_samples_zero_is_a_usage_error(conv_model, tmp_path, capsys):
    assert quantize(conv_model, tmp_path, "--max-samples", "0") == 2
    assert "argument --max-samples: must be a positive integer (>= 1), got 0" in error_line(capsys)


# --------------------------------------------------------------------------- item 7: CLI terms


def test_demo_calib_size_zero_is_a_usage_error(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d.onnx"), "--calib-size", "0"]) == 2
    line = error_line(capsys)
    assert "argument --calib-size: must be a positive integer (>= 1)" in line and "from_iterable" not in line


@pytest.mark.parametrize("text,needle", [
    ('[activations]\nnum_bins = "2048"\n', "config key 'activations.num_bins' must be an integer, got '2048'"),
    ('batch_size = "4"\n', "config key 'batch_size' must be an integer (or left out)"),
    ('exclude_ops = "Conv"\n', "config key 'exclude_ops' must be a list of strings"),
    ('[weights]\nper_channel = 1\n', "config key 'weights.per_channel' must be true or false"),
    ('[activations]\npercentile = "99"\n', "config key 'activations.percentile' must be a number"),
])
def test_config_type_errors_name_the_key_and_type(conv_model, tmp_path, capsys, text, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["inspect", str(conv_model), "--config", str(cfg)]) == 2
    line = error_line(capsys)
    assert needle in line and "not supported between" not in line


def test_config_file_settings_the_flags_do_not_name_are_kept(conv_model, tmp_path, capsys):
    """build_config rebuilt the specs from flags and dropped guard_ratio and bias_correction from the file."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[activations]\nguard_ratio = 3.0\n[weights]\nbias_correction = false\n")
    assert quantize(conv_model, tmp_path, "--config", str(cfg), "--method", "entropy", "--format", "json") == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["activations"]["guard_ratio"] == 3.0 and config["weights"]["bias_correction"] is False


def test_image_layout_hints_name_the_flag(tmp_path, capsys):
    images = tmp_path / "img"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    nhwc = tmp_path / "nhwc.onnx"
    onnx.save(model_from_text(NHWC, weights={"W": (4, 3, 3, 3), "B": (4,)}), str(nhwc))
    assert main(["quantize", str(nhwc), "-o", str(tmp_path / "q.onnx"), "--calib-data", str(images)]) == 2
    line = error_line(capsys)
    assert "add --nhwc" in line and "set layout=" not in line
    nchw = tmp_path / "nchw.onnx"
    save_onnx(conv_relu(batch=1), nchw)
    assert main(["quantize", str(nchw), "-o", str(tmp_path / "q.onnx"), "--calib-data", str(images),
                 "--nhwc"]) == 2
    assert "drop --nhwc" in error_line(capsys)


def _numeric_actions():
    """(subcommand, option) for every option of every subcommand whose values are numbers."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.type is not None:
                yield name, action


def test_every_numeric_flag_is_range_checked_at_parse_time():
    """No option parses with a bare int/float: each has a range (checked when parsed, named in the error)."""
    bare = [(name, a.option_strings[-1]) for name, a in _numeric_actions() if a.type in (int, float)]
    assert bare == []
    assert len(list(_numeric_actions())) >= 25


@pytest.mark.parametrize("argv,flag", [
    (["compare", "{m}", "{m}", "--random", "2", "--min-top1", "100.5"], "--min-top1"),
    (["compare", "{m}", "{m}", "--random", "2", "--min-top1", "-1"], "--min-top1"),
    (["compare", "{m}", "{m}", "--random", "2", "--min-cosine", "1.5"], "--min-cosine"),
    (["compare", "{m}", "{m}", "--random", "2", "--max-loss", "-3"], "--max-loss"),
    (["compare", "{m}", "{m}", "--random", "2", "--dump-samples", "0"], "--dump-samples"),
    (["compare", "{m}", "{m}", "--random", "2", "--top", "-1"], "--top"),
    (["compare", "{m}", "{m}", "--random", "2", "--min-sqnr", "nan"], "--min-sqnr"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--memory-mb", "0"], "--memory-mb"),
    (["quantize", "{m}", "-o", "{o}", "--random", "0"], "--random"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--batch-size", "0"], "--batch-size"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--num-bins", "300"], "--num-bins"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--method", "percentile", "--percentile", "101"],
     "--percentile"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--weight-percentile", "10"], "--weight-percentile"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--image-size", "0", "8"], "--image-size"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--std", "0"], "--std"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--pixel-scale", "-1"], "--pixel-scale"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--pad-value", "300"], "--pad-value"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--auto-fallback", "--max-float-layers", "-1"],
     "--max-float-layers"),
    (["quantize", "{m}", "-o", "{o}", "--random", "2", "--auto-fallback", "--min-sqnr", "20",
      "--max-metric-drop", "-1"], "--max-metric-drop"),
    (["sensitivity", "{m}", "--random", "2", "--workers", "0"], "--workers"),
    (["sensitivity", "{m}", "--random", "2", "--eval-samples", "0"], "--eval-samples"),
    (["sensitivity", "{m}", "--random", "2", "--top", "-2"], "--top"),
    (["calibrate", "{m}", "-o", "{o}", "--random", "2", "--short-side", "0"], "--short-side"),
    (["demo", "--eval-size", "0"], "--eval-size"),
])
def test_out_of_range_numbers_are_usage_errors_naming_the_flag(conv_model, tmp_path, capsys, argv, flag):
    argv = [a.format(m=conv_model, o=tmp_path / "o.onnx") for a in argv]
    assert main(argv) == 2
    line = error_line(capsys)
    assert f"argument {flag}" in line and "must be" in line
    assert not (tmp_path / "o.onnx").exists()


def test_quiet_and_verbose_work_after_the_subcommand(conv_model, tmp_path, capsys):
    assert quantize(conv_model, tmp_path, "-q") == 0
    assert capsys.readouterr().out == ""
    parser = build_parser()
    assert parser.parse_args(["inspect", "m.onnx", "-vv"]).verbose == 2
    assert parser.parse_args(["-v", "inspect", "m.onnx"]).verbose == 1  # before it still works
    assert parser.parse_args(["-q", "inspect", "m.onnx"]).quiet is True
    assert parser.parse_args(["inspect", "m.onnx"]).verbose == 0


@pytest.mark.parametrize("argv", [["quantize"], ["quantize", "m.onnx", "-o", "q.onnx", "--random", "0"],
                                  ["quantize", "m.onnx", "-o", "q.onnx", "--target", "tpu"], ["bogus"]])
def test_usage_errors_are_one_line(capsys, argv):
    """Like every other onnxq error: one line naming the problem; the usage is one -h away."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxq: error: ") and lines[0].endswith(" -h)")


# --------------------------------------------------------------------------- image preprocessing


def test_images_with_no_normalisation_flag_say_what_was_assumed(conv_model, tmp_path, caplog):
    images = tmp_path / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = str(tmp_path / "q.onnx")
    with caplog.at_level(logging.WARNING):
        assert main(["quantize", str(conv_model), "-o", out, "--calib-data", str(images)]) == 0
    assert "read as RGB scaled to [0, 1]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["quantize", str(conv_model), "-o", out, "--calib-data", str(images), "--mean", "0.5"]) == 0
    assert "read as RGB" not in caplog.text  # the user gave the preprocessing


def test_image_flags_on_array_data_are_warned_as_ignored(conv_model, calib_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert main(["quantize", str(conv_model), "-o", str(tmp_path / "q.onnx"), "--calib-data", str(calib_dir),
                     "--mean", "0.5", "--bgr"]) == 0
    assert "--mean, --bgr ignored" in caplog.text and "arrays" in caplog.text
