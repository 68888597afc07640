"""Tests of the recipes of issue 15 item 4: ``models/silero_vad.py`` (streaming VAD), ``models/ddddocr_ocr.py``
(captcha CTC recogniser) and ``models/romanizer.py`` (seq2seq encoder + decoder).

Fast: framing, labels, streaming state and context, CTC decoding, greedy seq2seq decoding, tokenisation and
the metrics, against hand-computed cases and tiny hand-made models. Slow (``-m slow``): the real float
models; they skip (one line saying what is missing) when a wheel, espeak-ng or the fonts are absent.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from helpers import REPO
from onnx import TensorProto, helper

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models import ddddocr_ocr, prepare, romanizer, silero_vad


# ------------------------------------------------------------------------------------------ Silero VAD
def test_silero_frame_labels_half_overlap_rule():
    # frames [0,512) [512,1024) [1024,1536); speech [300, 1100): frame 0 has 212 samples (< 256), frame 1
    # all 512, frame 2 has 76 -> only frame 1 is speech
    np.testing.assert_array_equal(silero_vad.frame_labels(1536, [(300, 1100)]), [False, True, False])
    # exactly half a frame counts; a clip that is not a multiple of 512 gets a padded last frame
    np.testing.assert_array_equal(
        silero_vad.frame_labels(1100, [(256, 600), (1024, 1100)]), [True, False, False]
    )
    np.testing.assert_array_equal(silero_vad.frame_labels(1024, [(0, 100), (200, 456)]), [True, False])


def test_silero_windows_carry_64_samples_of_context_and_pad_the_end():
    audio = np.arange(1, 1100, dtype=np.float32)  # 1099 samples -> 3 windows (padded with 437 zeros)
    wins = list(silero_vad.windows(audio))
    assert [w.shape for w in wins] == [(1, 576)] * 3
    assert not wins[0][0, :64].any()  # zero context before the first window
    np.testing.assert_array_equal(wins[0][0, 64:], audio[:512])
    np.testing.assert_array_equal(wins[1][0, :64], audio[448:512])  # the last 64 samples fed before
    np.testing.assert_array_equal(wins[1][0, 64:], audio[512:1024])
    np.testing.assert_array_equal(wins[2][0, 64:139], audio[1024:])
    assert not wins[2][0, 139:].any()


def _accumulator_vad(path):
    """output = sigmoid(mean(state)); stateN = state + 1 (counts the calls), inside an If on sr == 16000 as
    in the real model."""
    f = TensorProto.FLOAT
    then = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["state"], ["s0"], axes=[0, 2], keepdims=0),
            helper.make_node("Unsqueeze", ["s0", "ax1"], ["s1"]),
            helper.make_node("Sigmoid", ["s1"], ["out_t"]),
            helper.make_node("Add", ["state", "one"], ["st_t"]),
        ],
        "then",
        [],
        [
            helper.make_tensor_value_info("out_t", f, ["B", 1]),
            helper.make_tensor_value_info("st_t", f, [2, "B", 128]),
        ],
    )
    other = helper.make_graph(
        [
            helper.make_node("Identity", ["zero2"], ["out_e"]),
            helper.make_node("Identity", ["state"], ["st_e"]),
        ],
        "else",
        [],
        [
            helper.make_tensor_value_info("out_e", f, ["B", 1]),
            helper.make_tensor_value_info("st_e", f, [2, "B", 128]),
        ],
    )
    g = helper.make_graph(
        [
            helper.make_node("Equal", ["sr", "k16"], ["is16"]),
            helper.make_node("If", ["is16"], ["output", "stateN"], then_branch=then, else_branch=other),
        ],
        "vad",
        [
            helper.make_tensor_value_info("input", f, ["B", 576]),
            helper.make_tensor_value_info("state", f, [2, "B", 128]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("output", f, ["B", 1]),
            helper.make_tensor_value_info("stateN", f, [2, "B", 128]),
        ],
        [
            helper.make_tensor("k16", TensorProto.INT64, [], [16000]),
            helper.make_tensor("one", f, [], [1.0]),
            helper.make_tensor("zero2", f, [1, 1], [0.0]),
            helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def test_silero_stream_carries_state_and_resets_per_clip(tmp_path):
    from models import common

    sess = common.session(_accumulator_vad(tmp_path / "vad.onnx"))
    audio = np.zeros(1536, dtype=np.float32)
    record: list = []
    probs = silero_vad.stream(sess, audio, record)
    # state starts at 0 and gains 1 per call: sigmoid(0), sigmoid(1), sigmoid(2)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-np.array([0.0, 1.0, 2.0]))), rtol=1e-6)
    assert [float(f["state"].mean()) for f in record] == [0.0, 1.0, 2.0]
    assert all(f["sr"].dtype == np.int64 and f["sr"].shape == () and int(f["sr"]) == 16000 for f in record)
    np.testing.assert_allclose(silero_vad.stream(sess, audio[:512]), [0.5])  # a new clip starts from zeros


def test_silero_scores_hand_computed():
    probs = [np.array([0.1, 0.5, 0.9, 0.49]), np.array([0.7, 0.2])]
    labels = [np.array([False, True, True, True]), np.array([True, True])]
    reference = [np.array([0.2, 0.4, 0.8, 0.3]), np.array([0.6, 0.6])]
    out = silero_vad.scores(probs, labels, reference)
    # decisions: F T T F | T F; labels F T T T | T T -> 4/6; float F F T F | T T -> 4/6
    assert out["accuracy"] == pytest.approx(400 / 6) and out["agreement"] == pytest.approx(400 / 6)
    assert out["speech_pct"] == pytest.approx(500 / 6) and out["samples"] == 6


def test_silero_active_interval_and_noise():
    x = np.zeros(1600)
    x[320:800] = 0.5  # 10 ms blocks of 160 samples: 2..4 active
    x[1000:1010] = 0.001  # -54 dB: below -40 dB of the loudest block
    assert silero_vad.active_interval(x, 16000) == (320, 800)
    assert silero_vad.active_interval(np.zeros(100), 16000) == (0, 0)
    rng = np.random.default_rng(0)
    for kind in ("white", "pink", "brown"):
        n = silero_vad.colored_noise(kind, 4096, rng)
        assert n.shape == (4096,) and np.mean(n**2) == pytest.approx(1.0)


def test_silero_wav_round_trip(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 0.999], dtype=np.float32)
    path = tmp_path / "a.wav"
    path.write_bytes(silero_vad.wav_bytes(x))
    rate, y = silero_vad.read_wav(path)
    assert rate == 16000
    np.testing.assert_allclose(y, x, atol=1 / 32768)


def test_silero_without_espeak_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("ONNXQ_ESPEAK", raising=False)
    monkeypatch.setattr(silero_vad.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        silero_vad.espeak_binary()


# ------------------------------------------------------------------------------------------ ddddocr
def test_ddddocr_ctc_decoding_of_time_batch_class_output():
    # [T=6, 1, C=4]: arg-max 0 2 2 0 2 3 -> 2 2 3 (repeats merged, blanks dropped, a blank separates repeats)
    idx = [0, 2, 2, 0, 2, 3]
    out = np.zeros((6, 1, 4), dtype=np.float32)
    out[np.arange(6), 0, idx] = 1.0
    np.testing.assert_array_equal(ddddocr_ocr.ctc_indices(out), [2, 2, 3])
    assert ddddocr_ocr.indices_to_text([2, 2, 3], ["", "a", "b", "c"]) == "bbc"


def test_ddddocr_preprocess_lanczos_height_64_grey_unit_range():
    from PIL import Image

    img = Image.new("RGB", (50, 20), (255, 0, 0))  # pure red: L = 0.299 * 255 = 76
    x = ddddocr_ocr.preprocess(img)
    assert x.shape == (1, 1, 64, 160) and x.dtype == np.float32  # int(50 * 64/20) = 160
    np.testing.assert_allclose(x, 76 / 255, atol=1e-6)
    assert ddddocr_ocr.preprocess(Image.new("RGB", (33, 17))).shape[-1] == int(33 * (64 / 17))  # 124


def test_ddddocr_scores_hand_computed():
    out = ddddocr_ocr.scores(["ab1c", "XYZ", "k"], ["ab1c", "xyz", "kk"])
    assert out["accuracy"] == pytest.approx(100 / 3) and out["accuracy_nocase"] == pytest.approx(200 / 3)
    assert out["cer"] == pytest.approx(100 * 4 / 9)  # 0 + 3 substitutions + 1 insertion over 9 characters


def test_ddddocr_text_sample_is_deterministic():
    a = ddddocr_ocr.random_text(np.random.default_rng([8002, 3]))
    assert a == ddddocr_ocr.random_text(np.random.default_rng([8002, 3]))
    assert 4 <= len(a) <= 6 and set(a) <= set(ddddocr_ocr.ALPHABET)


# ------------------------------------------------------------------------------------------ romanizer
TOKENS = ["<PAD>", "<BOS>", "<EOS>", "<UNK>", "<UNK_COUNTRY>", "<DZ>", "<ROLE_GIVEN>", "<ROLE_SURNAME>",
          "<ROLE_UNKNOWN>", " ", "a", "b", "ب", "ا"]  # fmt: skip


def test_romanizer_source_tokens_country_role_chars_eos():
    assert romanizer.encode_source("با", "dz", "surname", TOKENS) == [5, 7, 12, 13, 2]
    assert romanizer.encode_source("بx", None, None, TOKENS) == [4, 8, 12, 3, 2]  # unknown char -> UNK
    assert romanizer.encode_source("ب", "EG", "given", TOKENS) == [3, 6, 12, 2]  # unknown country -> UNK
    no_roles = TOKENS[:6] + TOKENS[9:]
    assert romanizer.encode_source("ب", "DZ", "given", no_roles) == [5, 9, 2]


def test_romanizer_decode_text_stops_at_eos_and_drops_specials():
    assert romanizer.decode_text([10, 3, 5, 11, 9, 2, 10], TOKENS) == "ab"  # UNK, <DZ> dropped; stripped
    assert romanizer.decode_text([0, 1, 10], TOKENS) == "a"


def test_romanizer_greedy_step_forbids_eos_first_and_pad():
    lp = np.log(np.array([0.5, 0.0, 0.3, 0.0, 0.2]) + 1e-12)
    assert romanizer.greedy_step(lp, 0) == 4  # PAD and EOS out at step 0
    assert romanizer.greedy_step(lp, 1) == 2  # EOS allowed later, PAD never


def test_romanizer_scores_hand_computed():
    out = romanizer.scores(
        ["Ali", "Omar", "Hasan"], [("Ali",), ("Omer", "Omar"), ("Hassan",)], ["Ali", "Omar", "Hassan"]
    )
    assert out["exact"] == pytest.approx(100 / 3) and out["exact_any"] == pytest.approx(200 / 3)
    assert out["cer"] == pytest.approx(100 * 2 / 13)  # Omar/Omer 1 + Hasan/Hassan 1 over 3+4+6
    assert out["agreement"] == pytest.approx(200 / 3) and out["cer_float"] == pytest.approx(100 / 13)


def test_prepare_knows_the_issue15_keys():
    assert {"silero_vad", "ddddocr_ocr", "romanizer_encoder", "romanizer_decoder"} <= set(prepare.KEYS)


# ------------------------------------------------------------------------------------------ real models
def _or_skip(fn, *args):
    try:
        return fn(*args)
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(" ".join(str(exc).split())[:200])


@pytest.mark.slow
def test_silero_real_float_streaming():
    path = _or_skip(silero_vad.build)
    _or_skip(silero_vad.espeak_binary)
    out = silero_vad.evaluate(path, float_model=path, limit=6)
    assert out["agreement"] == 100.0 and out["accuracy"] > 85.0


@pytest.mark.slow
def test_ddddocr_real_float_reads_captchas():
    path = _or_skip(ddddocr_ocr.build)
    from models import ppocrv6_rec

    _or_skip(ppocrv6_rec.find_fonts)
    assert len(ddddocr_ocr.charset("beta")) == 8210
    out = ddddocr_ocr.evaluate(path, float_model=path, limit=50)
    assert out["agreement"] == 100.0 and out["accuracy"] > 60.0


@pytest.mark.slow
def test_romanizer_real_float_pipeline():
    enc = _or_skip(romanizer.build, "encoder")
    dec = romanizer.build("decoder")
    out = romanizer.evaluate_pair(enc, dec, limit=100)
    assert out["agreement"] == 100.0 and out["exact"] > 30.0
    assert len(romanizer.names()) == 43474 and len(set(romanizer.splits()["calib"])) == 200


def test_prepare_keeps_scalar_inputs_0d():
    import io

    buf = io.BytesIO()
    prepare.np_savez(buf, {"sr": np.array(16000, dtype=np.int64), "x": np.zeros((1, 3), np.float32)[:, ::2]})
    buf.seek(0)
    with np.load(buf) as z:
        assert z["sr"].shape == () and int(z["sr"]) == 16000 and z["sr"].dtype == np.int64
        assert z["x"].shape == (1, 2)
