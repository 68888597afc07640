"""ddddocr captcha recogniser benchmark recipe.

Model: ``ddddocr/common.onnx`` (54 MB, opset 12, MIT) read verbatim out of the ``ddddocr==1.6.1`` wheel and
checked against its SHA-256. Input ``input1`` [1,1,64,W] float32 (grey, in [0, 1]); output ``387``
[W/8,1,8210] (time, batch, class logits; the graph declares [1,seqlen], onnxruntime warns and returns the
real shape). Graph: a Conv backbone with SiLU written as Sigmoid+Mul (21 Conv), one bidirectional ``LSTM``
op, a Gemm to the 8,210 classes.

Which model the package runs (``ddddocr/models/model_loader.py``, ``load_ocr_model``): ``common.onnx`` only
with ``DdddOcr(beta=True)``; the default (``old=False, beta=False``) and ``old=True`` load
``common_old.onnx``, an onnxruntime dynamic-int8 model (DynamicQuantizeLinear, ConvInteger,
DynamicQuantizeLSTM, MatMulInteger) of an *older* network: it decodes with another character order
(``CHARSET_OLD``; its class indices mean nothing under ``CHARSET_BETA``). It is the package's own int8
baseline here, compared with the float model through the decoded text (:func:`evaluate` with
``charset="old"``); :func:`build_old` extracts it.

Character set: ``CHARSET_BETA`` of ``ddddocr/charsets.py`` (8,210 entries; index 0 is ``""``, the CTC
blank), read out of the wheel as a Python literal (the package is not imported: it needs OpenCV). The
same list is in ``ddddocr/models/charset_manager.py``'s ``_get_beta_charset``.

Preprocessing (``ddddocr/core/ocr_engine.py``, ``OCREngine._preprocess_image`` for the bundled models):
the PIL image as loaded (RGB here) is resized with ``Image.LANCZOS`` to height 64 and width
``int(w * (64 / h))``, then converted to ``L`` (grey), then divided by 255 (no mean or std), shaped
[1,1,64,W]. Decoding (``_process_text_output`` and ``_ctc_decode_indices``): arg-max per time step over
``output[:, 0, :]``, repeats merged, index 0 dropped, indices mapped through the charset.

Data: captcha-style images rendered with Pillow and the system fonts of :mod:`models.ppocrv6_rec`
(DejaVu, Liberation, FreeFont), deterministic: sample ``i`` of a split is drawn from
``numpy.random.default_rng([seed, i])``. Text: 4-6 characters of digits and lower-case ASCII letters
(all in the charset; with upper case too the float model reads only 16 % of the texts exactly, 80 % ignoring
case: it mostly answers in lower case). Each character is drawn in its own colour, rotated by up to 25 degrees and
shifted vertically; a light random background, 2-5 interference lines, 100-400 noise dots, then a slight
blur for 30 % of images. Images are 40-70 px high. 200 calibration and 500 evaluation images, written as
PNG with ``labels.json`` into ``<cache>/ddddocr_ocr_images/<split>/`` on first use (a few seconds).

Metrics: ``accuracy`` (% of images whose decoded text equals the rendered text exactly), ``accuracy_nocase``
(the same, ignoring case: a captcha reader is often used that way), ``cer`` (%) and, given a float model,
``agreement`` (% of images whose decoded class sequence equals the float model's; with ``charset="old"``,
the decoded text is compared instead).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from models import common, ppocrv6_rec, wheels

KEY = "ddddocr_ocr"
WHEEL = wheels.Wheel("ddddocr==1.6.1", "ddddocr-1.6.1-*.whl", "ONNXQ_DDDDOCR_WHEEL")
MEMBER = "ddddocr/common.onnx"
SHA256 = "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"
OLD_MEMBER = "ddddocr/common_old.onnx"
OLD_SHA256 = "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68"
CHARSETS_MEMBER = "ddddocr/charsets.py"
INPUT = "input1"
HEIGHT = 64
NUM_CLASSES = 8210

SPLITS = {"calib": (200, 8001), "eval": (500, 8002)}  # split -> (count, seed)
GENERATOR_VERSION = 2
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


# ------------------------------------------------------------------------------------------------ model
def build(cache: Path | None = None) -> Path:
    """Extract ``common.onnx`` (float) from the ddddocr wheel into the cache (skipped when intact)."""
    return wheels.extract_model(WHEEL, MEMBER, SHA256, KEY, cache)


def build_old(cache: Path | None = None) -> Path:
    """Extract ``common_old.onnx`` (the package's own dynamic-int8 model, CHARSET_OLD) as ``ddddocr_ocr_old``."""
    return wheels.extract_model(WHEEL, OLD_MEMBER, OLD_SHA256, f"{KEY}_old", cache)


@lru_cache(maxsize=2)
def charset(name: str = "beta") -> tuple[str, ...]:
    """``CHARSET_BETA`` (for common.onnx) or ``CHARSET_OLD`` (for common_old.onnx) of the wheel's
    ``ddddocr/charsets.py``, parsed as literals (8,210 entries each)."""
    wanted = {"beta": "CHARSET_BETA", "old": "CHARSET_OLD"}[name]
    tree = ast.parse(WHEEL.read(CHARSETS_MEMBER).decode("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == wanted:
            chars = tuple(ast.literal_eval(node.value))
            if len(chars) != NUM_CLASSES or chars[0] != "":
                raise ValueError(f"{wanted} has {len(chars)} entries, expected {NUM_CLASSES} with '' first")
            return chars
    raise ValueError(f"{CHARSETS_MEMBER} has no {wanted}")


# -------------------------------------------------------------------------------------- preprocessing
def preprocess(image) -> np.ndarray:
    """PIL image -> [1,1,64,W] float32 as ddddocr feeds its bundled models: LANCZOS resize to height 64,
    width ``int(w * (64 / h))``, then grey (``convert('L')``), then /255."""
    from PIL import Image

    w, h = image.size
    resized = image.resize((int(w * (HEIGHT / h)), HEIGHT), Image.LANCZOS).convert("L")
    return (np.asarray(resized).astype(np.float32) / 255.0)[None, None]


def ctc_indices(output: np.ndarray) -> np.ndarray:
    """Greedy CTC decoding of the model's [T,1,C] output (``output[:, 0, :]``), blank 0."""
    out = np.asarray(output)
    return ppocrv6_rec.ctc_indices(out[:, 0, :] if out.ndim == 3 else out)


def indices_to_text(indices: Sequence[int], chars: Sequence[str]) -> str:
    return "".join(chars[int(i)] for i in indices if 0 <= int(i) < len(chars))


# ------------------------------------------------------------------------------------------------ data
def random_text(rng: np.random.Generator) -> str:
    return "".join(ALPHABET[int(i)] for i in rng.integers(len(ALPHABET), size=int(rng.integers(4, 7))))


def render(text: str, fonts: Sequence[Path], rng: np.random.Generator):
    """A captcha-style RGB PIL image of ``text`` (see the module docstring)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(28, 46))
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
    bg = tuple(int(c) for c in rng.integers(170, 256, size=3))
    glyphs = []
    for ch in text:
        left, top, right, bottom = font.getbbox(ch)
        tile = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
        fg = tuple(int(c) for c in rng.integers(0, 140, size=3)) + (255,)
        ImageDraw.Draw(tile).text((4 - left, 4 - top), ch, font=font, fill=fg)
        glyphs.append(
            tile.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BICUBIC, expand=True)
        )
    height = max(g.size[1] for g in glyphs) + int(rng.integers(6, 20))
    width = sum(g.size[0] for g in glyphs) + int(rng.integers(10, 30))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    x = int(rng.integers(3, 10))
    for g in glyphs:
        y = int(rng.integers(0, max(1, height - g.size[1])))
        img.paste(g, (x, y), g)
        x += g.size[0] - int(rng.integers(0, max(1, g.size[0] // 5)))
    for _ in range(int(rng.integers(2, 6))):
        pts = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(
            pts, fill=tuple(int(c) for c in rng.integers(0, 200, size=3)), width=int(rng.integers(1, 3))
        )
    for _ in range(int(rng.integers(100, 401))):
        px, py = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.point((px, py), fill=tuple(int(c) for c in rng.integers(0, 256, size=3)))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    return img


def sample(split: str, index: int, fonts: Sequence[Path]):
    """(text, PIL image) of sample ``index`` of ``split``: a function of the seed, the index and the fonts."""
    rng = np.random.default_rng([SPLITS[split][1], index])
    text = random_text(rng)
    return text, render(text, fonts, rng)


def images_dir(split: str, cache: Path | None = None) -> Path:
    """``<cache>/ddddocr_ocr_images/<split>``, (re)written when absent or stale: NNNNN.png, labels.json,
    manifest.json."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: calib or eval")
    fonts = ppocrv6_rec.find_fonts()
    count, seed = SPLITS[split]
    folder = common.cache_dir(cache) / f"{KEY}_images" / split
    manifest = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "count": count,
        "fonts": [f.name for f in fonts],
    }
    if common.fresh_folder(folder, manifest):
        return folder
    labels = {}
    for i in range(count):
        text, img = sample(split, i, fonts)
        name = f"{i:05d}.png"
        img.save(folder / name)
        labels[name] = text
    common.atomic_write_bytes(folder / "labels.json", json.dumps(labels, indent=0).encode())
    common.atomic_write_bytes(folder / "manifest.json", json.dumps(manifest).encode())
    return folder


def _samples(split: str, limit: int | None) -> list[tuple[Path, str]]:
    folder = images_dir(split)
    labels = json.loads((folder / "labels.json").read_text())
    items = [(folder / name, labels[name]) for name in sorted(labels)]
    return items if limit is None else items[:limit]


def _feeds(items: list[tuple[Path, str]]) -> Iterator[dict[str, np.ndarray]]:
    from PIL import Image

    for path, _ in items:
        with Image.open(path) as im:
            yield {INPUT: preprocess(im.convert("RGB"))}


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The 200 calibration images, ``{"input1": [1,1,64,W]}`` each (W varies). ``data_root`` is unused."""
    return _feeds(_samples("calib", limit))


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The 500 evaluation images, in file-name order."""
    return _feeds(_samples("eval", limit))


def eval_texts(limit: int | None = None) -> list[str]:
    return [text for _, text in _samples("eval", limit)]


# ------------------------------------------------------------------------------------------ evaluation
def decode_all(model_path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the graph declares output [1,seqlen]: one warning per run otherwise
    return [ctc_indices(out[0]) for out in common.run_model(model_path, eval_feeds(None, limit))]


@lru_cache(maxsize=2)
def _reference(path: str, stamp: tuple, limit: int | None) -> tuple[np.ndarray, ...]:
    return tuple(decode_all(path, limit))


def reference_indices(float_model: str | Path, limit: int | None = None) -> tuple[np.ndarray, ...]:
    stamp = common.run_stamp(float_model, extra=((images_dir("eval") / "manifest.json").read_text(),))
    return _reference(str(Path(float_model).resolve()), stamp, limit)


def scores(read: Sequence[str], texts: Sequence[str]) -> dict[str, float]:
    """accuracy, accuracy_nocase and cer (%) of decoded texts against the rendered ones."""
    if len(read) != len(texts) or not texts:
        raise ValueError(f"{len(read)} decoded texts for {len(texts)} labels")
    errors = sum(ppocrv6_rec.edit_distance(r, t) for r, t in zip(read, texts))
    return {
        "accuracy": 100.0 * float(np.mean([r == t for r, t in zip(read, texts)])),
        "accuracy_nocase": 100.0 * float(np.mean([r.lower() == t.lower() for r, t in zip(read, texts)])),
        "cer": 100.0 * errors / max(1, sum(len(t) for t in texts)),
        "samples": float(len(texts)),
    }


def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
    charset_name: str = "beta",
) -> dict[str, float]:
    """Accuracy and CER against the rendered texts; agreement (%) with ``float_model`` (common.onnx) when
    given. ``charset_name="old"`` evaluates common_old.onnx (its own charset; agreement on the text)."""
    texts = eval_texts(limit)
    decoded = decode_all(model_path, limit)
    chars = charset(charset_name)
    read = [indices_to_text(seq, chars) for seq in decoded]
    result = scores(read, texts)
    if float_model is not None:
        same = Path(model_path).resolve() == Path(float_model).resolve()
        reference = decoded if same else reference_indices(float_model, limit)
        if charset_name == "beta":
            same_seq = [np.array_equal(a, b) for a, b in zip(decoded, reference)]
        else:
            beta = charset("beta")
            same_seq = [r == indices_to_text(b, beta) for r, b in zip(read, reference)]
        result["agreement"] = 100.0 * float(np.mean(same_seq))
    return result
