"""PP-OCRv6 text recogniser (small) benchmark recipe.

Model: ``rapidocr/models/PP-OCRv6_rec_small.onnx`` (21 MB, opset 11, Apache-2.0) read verbatim out of the
``rapidocr==3.10.0`` wheel and checked against its SHA-256 (the same digest rapidocr's own
``default_models.yaml`` lists). Input ``x`` [B,3,48,W] float32; output ``fetch_name_0`` [B,W/8,18710]:
per time step, softmax probabilities over CTC classes. SVTR-style: a Conv backbone, then attention blocks
(MatMul between activations, Softmax, LayerNorm written as ReduceMean/Sub/Pow/Sqrt/Div, Erf GELU).

Character dictionary: the model's ``metadata_props["character"]`` (18,708 lines), which rapidocr reads
with onnxruntime's ``custom_metadata_map``. As in rapidocr's ``CTCLabelDecode``: class 0 is the CTC blank,
classes 1..18708 are the dictionary's lines in order, class 18709 is a space. Decoding is greedy: arg-max
per time step, repeats merged, blanks dropped. The dictionary is read from the float model (a quantizer
need not keep metadata).

Preprocessing (rapidocr 3.10.0 ``TextRecognizer``, batch of one image, ``rec_img_shape`` [3,48,320]):
the image is BGR (rapidocr loads files with Pillow and converts RGB to BGR); the padded width is
``int(48 * max(320/48, w/h))`` (so 320 for crops up to 6.67 times as wide as high); the crop is resized
to height 48 and width ``min(padded width, ceil(48*w/h))`` with ``cv2.resize``'s default bilinear rule
(half-pixel centres, no anti-aliasing; reproduced in numpy here, the result rounded to uint8 as cv2 does),
normalised ``(x/255 - 0.5)/0.5`` and zero-padded on the right after normalisation. rapidocr batches six
crops sorted by width and pads them to the widest; this recipe feeds one crop at a time.

Data: word crops rendered with Pillow and the system fonts (DejaVu, Liberation, FreeFont: Debian packages
fonts-dejavu-core, fonts-liberation, fonts-freefont-ttf), deterministic: sample ``i`` of a split is drawn
from ``numpy.random.default_rng([seed, i])``. Texts are English words (lower case, Title case, UPPER
case, one or two words, some with trailing punctuation) and numbers, prices, dates, times, percentages
and codes, degraded as :func:`render` says (small text, low contrast, rotation, blur, noise, JPEG). 200
calibration and 500 evaluation crops, written as PNG with ``labels.json`` into
``<cache>/ppocrv6_rec_crops/<split>/`` on first use (about 3 s) and rewritten when the generator or the
fonts found change (see ``manifest.json``). The figures in models/README.md are for all 15 font files of
:data:`FONT_FILES` present; with fewer fonts the crops differ.

Metrics: ``accuracy`` (% of crops whose decoded text equals the rendered text exactly), ``cer`` (character
error rate %, edit distance over the rendered characters) and, given a float model, ``agreement`` (% of
crops whose decoded class sequence equals the float model's exactly).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from models import common, wheels

KEY = "ppocrv6_rec"
WHEEL = wheels.Wheel("rapidocr==3.10.0", "rapidocr-3.10.0-*.whl", "ONNXQ_RAPIDOCR3_WHEEL")
MEMBER = "rapidocr/models/PP-OCRv6_rec_small.onnx"
SHA256 = "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"
INPUT = "x"
OUTPUT = "fetch_name_0"
HEIGHT = 48
MIN_WIDTH = 320  # rapidocr's rec_img_shape[2]
NUM_CLASSES = 18710

SPLITS = {"calib": (200, 6001), "eval": (500, 6002)}  # split -> (count, seed)
GENERATOR_VERSION = 1  # bump when the rendering changes: the cached crops are then rewritten
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansCondensed.ttf",
    "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
    "LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationSerif-Regular.ttf",
    "LiberationSerif-Italic.ttf", "LiberationMono-Regular.ttf",
    "FreeSans.ttf", "FreeSansBold.ttf", "FreeSerif.ttf", "FreeMono.ttf",
)  # fmt: skip
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")  # $ONNXQ_FONTS (a folder) is searched first

_WORD_TEXT = """
the of and to in is was for that with as on by at from his her they which this are be have had not
but what all were when there can an your more one about other time will would into year people could
them first some then only new also over after two work just like most where may back should because
water these under great state world still between never high every city house place country school
light small large number night point family money story month order power market church office morning
river garden window letter paper table street station doctor price ticket coffee bread orange yellow
purple silver golden winter summer autumn spring monday friday sunday january march april august
october december north south east west london paris berlin madrid rome tokyo boston denver seattle
chicago texas oregon quick brown jumps lazy bright simple modern public private open closed exit
entrance parking hotel bank pharmacy museum library airport harbour bridge tower castle village
island mountain forest valley desert ocean planet rocket engine motor signal camera screen keyboard
mouse printer network server cloud update download install record update button message contact
welcome thanks please sorry hello goodbye warning danger caution notice total amount balance invoice
receipt payment credit debit account address phone email website online service support customer
delivery shipping product sample quality organic natural fresh frozen special limited edition
version model serial battery voltage current energy weight height length width volume pressure
"""
WORDS = tuple(_WORD_TEXT.split())


# ------------------------------------------------------------------------------------------------ model
def build(cache: Path | None = None) -> Path:
    """Extract the float model from the rapidocr wheel into the cache (skipped when present and intact)."""
    return wheels.extract_model(WHEEL, MEMBER, SHA256, KEY, cache)


def characters(model_path: str | Path | None = None) -> list[str]:
    """The CTC classes as rapidocr decodes them: ``["blank", *metadata lines, " "]`` (18,710 entries), from
    ``model_path`` (default: the float model, built if needed)."""
    return list(_characters(str(model_path or build())))


@lru_cache(maxsize=4)
def _characters(path: str) -> tuple[str, ...]:
    import onnx

    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path} has no 'character' metadata: pass the float model")
    return ("blank", *meta["character"].splitlines(), " ")


# -------------------------------------------------------------------------------------- preprocessing
def widths(h: int, w: int) -> tuple[int, int]:
    """(padded input width, resized width) for an ``h`` x ``w`` crop fed alone, as rapidocr computes them."""
    ratio = w / float(h)
    padded = int(HEIGHT * max(MIN_WIDTH / HEIGHT, ratio))
    resized = min(padded, math.ceil(HEIGHT * ratio))
    return padded, resized


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of cv2's INTER_LINEAR along one axis (half-pixel centres, edges clamped,
    no anti-aliasing when shrinking)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    low = i0 < 0
    i0[low], frac[low] = 0, 0.0
    high = i0 >= n_in - 1
    i0[high], frac[high] = n_in - 1, 0.0
    return i0, np.minimum(i0 + 1, n_in - 1), frac


def resize_linear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC uint8 image resized like ``cv2.resize(img, (width, height))`` (INTER_LINEAR), uint8 result.

    cv2 computes in 11-bit fixed point; this computes in float64 and rounds, so a pixel may differ by one
    level.
    """
    img = np.asarray(img)
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.copy()
    y0, y1, fy = _linear_taps(h, height)
    x0, x1, fx = _linear_taps(w, width)
    src = img.astype(np.float64)
    rows = src[y0] * (1.0 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    out = rows[:, x0] * (1.0 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB crop -> [1,3,48,W] float32 model input (BGR, normalised, zero right padding)."""
    h, w = rgb.shape[:2]
    padded, resized_w = widths(h, w)
    resized = resize_linear(rgb, HEIGHT, resized_w)
    out = np.zeros((1, 3, HEIGHT, padded), dtype=np.float32)
    out[:, :, :, :resized_w] = common.bgr_unit_nchw(resized)
    return out


# ------------------------------------------------------------------------------------------ decoding
def ctc_indices(probs: np.ndarray) -> np.ndarray:
    """Greedy CTC decoding of one [T,C] score matrix: arg-max per step, repeats merged, blanks (0) dropped."""
    idx = np.asarray(probs).argmax(axis=-1)
    keep = np.ones(idx.shape, dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    keep &= idx != 0
    return idx[keep]


def indices_to_text(indices: Sequence[int], chars: Sequence[str]) -> str:
    return "".join(chars[int(i)] for i in indices)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# ------------------------------------------------------------------------------------------------ data
def find_fonts(font_dirs: Sequence[str | Path] | None = None) -> list[Path]:
    """The files of :data:`FONT_FILES` found (``$ONNXQ_FONTS`` then /usr/share/fonts, recursively), in the
    order of FONT_FILES; FileNotFoundError naming the packages to install when none is found."""
    if font_dirs is None:
        env = os.environ.get("ONNXQ_FONTS")
        font_dirs = ([env] if env else []) + list(FONT_DIRS)
    found: dict[str, Path] = {}
    for folder in font_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.ttf")):
            if path.name in FONT_FILES and path.name not in found:
                found[path.name] = path
    fonts = [found[name] for name in FONT_FILES if name in found]
    if not fonts:
        raise FileNotFoundError(
            "no font of FONT_FILES found: apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf "
            "(or set ONNXQ_FONTS to a folder holding them)"
        )
    return fonts


def random_text(rng: np.random.Generator) -> str:
    """One English word (in one of three casings, sometimes with punctuation) or a number-like string."""
    kind = rng.random()
    if kind < 0.72:
        n_words = 1 if rng.random() < 0.75 else 2
        case = rng.random()
        words = [str(WORDS[rng.integers(len(WORDS))]) for _ in range(n_words)]
        text = " ".join(words)
        text = text if case < 0.5 else text.title() if case < 0.8 else text.upper()
        if rng.random() < 0.12:
            text += str(rng.choice([".", ",", ":", "!", "?"]))
        return text
    form = int(rng.integers(7))
    if form == 0:
        return str(int(rng.integers(0, 100000)))
    if form == 1:
        return f"${rng.integers(1, 1000)}.{rng.integers(0, 100):02d}"
    if form == 2:
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(1990, 2031)}"
    if form == 3:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    if form == 4:
        return f"{rng.integers(1, 100)}%"
    if form == 5:
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        return "".join(rng.choice(list(letters), size=2)) + "-" + str(rng.integers(100, 10000))
    return f"{rng.integers(1, 1000)}.{rng.integers(0, 10)}"


def render(text: str, font_path: Path, rng: np.random.Generator) -> np.ndarray:
    """A tight HxWx3 uint8 RGB crop of ``text`` in ``font_path``; size, colours and degradations drawn from
    ``rng``: 30 % small text (10-16 px, upscaled by the preprocessing), else 17-44 px; contrast 45-220
    levels, 15 % light on dark; 30 % rotated by up to 3 degrees; 35 % blurred; Gaussian noise (sigma up to
    12); 40 % JPEG-compressed (quality 25-85)."""
    import io

    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(10, 17)) if rng.random() < 0.3 else int(rng.integers(17, 45))
    font = ImageFont.truetype(str(font_path), size)
    left, top, right, bottom = font.getbbox(text)
    mx, my = int(rng.integers(0, 11)), int(rng.integers(0, 9))
    bg_level = int(rng.integers(120, 256))
    fg_level = max(0, bg_level - int(rng.integers(45, 221)))
    bg = np.clip(bg_level + rng.integers(-15, 16, size=3), 0, 255)
    fg = np.clip(fg_level + rng.integers(-10, 11, size=3), 0, 255)
    if rng.random() < 0.15:
        bg, fg = 255 - bg, 255 - fg
    bg_t, fg_t = tuple(int(c) for c in bg), tuple(int(c) for c in fg)
    img = Image.new("RGB", (right - left + 2 * mx, bottom - top + 2 * my), bg_t)
    ImageDraw.Draw(img).text((mx - left, my - top), text, font=font, fill=fg_t)
    if rng.random() < 0.3:
        img = img.rotate(
            float(rng.uniform(-3.0, 3.0)), resample=Image.Resampling.BILINEAR, expand=True, fillcolor=bg_t
        )
    if rng.random() < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    arr = np.asarray(img).astype(np.float64)
    arr += rng.normal(0.0, float(rng.uniform(0.0, 12.0)), size=arr.shape)
    arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(rng.integers(25, 86)))
        with Image.open(buf) as im:
            arr = np.asarray(im.convert("RGB"))
    return arr


def sample(split: str, index: int, fonts: Sequence[Path]) -> tuple[str, np.ndarray, str]:
    """(text, RGB crop, font file name) of sample ``index`` of ``split``: a function of the seed, the index
    and the font list only."""
    rng = np.random.default_rng([SPLITS[split][1], index])
    text = random_text(rng)
    font = fonts[int(rng.integers(len(fonts)))]
    return text, render(text, font, rng), font.name


def crops_dir(split: str, cache: Path | None = None) -> Path:
    """``<cache>/ppocrv6_rec_crops/<split>``, (re)written when absent or stale; holds NNNNN.png and
    labels.json ({file: text}) and manifest.json (what made them)."""
    from PIL import Image

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: calib or eval")
    fonts = find_fonts()
    count, seed = SPLITS[split]
    folder = common.cache_dir(cache) / f"{KEY}_crops" / split
    manifest = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "count": count,
        "fonts": [f.name for f in fonts],
    }
    if common.fresh_folder(folder, manifest):
        return folder
    labels, used = {}, {}
    for i in range(count):
        text, rgb, font = sample(split, i, fonts)
        name = f"{i:05d}.png"
        Image.fromarray(rgb).save(folder / name)
        labels[name], used[name] = text, font
    common.atomic_write_bytes(
        folder / "labels.json", json.dumps(labels, indent=0, ensure_ascii=False).encode()
    )
    common.atomic_write_bytes(folder / "fonts.json", json.dumps(used, indent=0).encode())
    common.atomic_write_bytes(folder / "manifest.json", json.dumps(manifest).encode())  # last: marks the folder complete
    return folder


def _samples(split: str, limit: int | None) -> list[tuple[Path, str]]:
    folder = crops_dir(split)
    labels = json.loads((folder / "labels.json").read_text())
    items = [(folder / name, labels[name]) for name in sorted(labels)]
    return items if limit is None else items[:limit]


def _feeds(items: list[tuple[Path, str]]) -> Iterator[dict[str, np.ndarray]]:
    for path, _ in items:
        yield {INPUT: preprocess(common.load_rgb(path))}


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the 200 rendered calibration crops, ``{"x": [1,3,48,W]}`` each (W mostly 320).

    ``data_root`` is accepted for the common recipe interface and unused: the crops are rendered."""
    return _feeds(_samples("calib", limit))


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: the 500 rendered evaluation crops, in file-name order."""
    return _feeds(_samples("eval", limit))


def eval_texts(limit: int | None = None) -> list[str]:
    """The rendered texts in the order of :func:`eval_feeds`."""
    return [text for _, text in _samples("eval", limit)]


# ------------------------------------------------------------------------------------------ evaluation
def decode_all(model_path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """The decoded class sequence of every evaluation crop."""
    return [ctc_indices(out[0][0]) for out in common.run_model(model_path, eval_feeds(None, limit))]


@lru_cache(maxsize=2)
def _reference_indices(path: str, stamp: tuple, limit: int | None) -> tuple[np.ndarray, ...]:
    return tuple(decode_all(path, limit))


def reference_indices(float_model: str | Path, limit: int | None = None) -> tuple[np.ndarray, ...]:
    """The float model's decoded sequences, computed once per process (keyed by file, size, mtime,
    evaluation mode and the crops' manifest)."""
    stamp = common.run_stamp(float_model, extra=((crops_dir("eval") / "manifest.json").read_text(),))
    return _reference_indices(str(Path(float_model).resolve()), stamp, limit)


def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Word accuracy and CER (%) against the rendered texts; agreement (%) with ``float_model`` when given."""
    texts = eval_texts(limit)
    chars = characters(float_model)
    decoded = decode_all(model_path, limit)
    read = [indices_to_text(seq, chars) for seq in decoded]
    errors = sum(edit_distance(r, t) for r, t in zip(read, texts))
    result = {
        "accuracy": 100.0 * float(np.mean([r == t for r, t in zip(read, texts)])),
        "cer": 100.0 * errors / max(1, sum(len(t) for t in texts)),
        "samples": float(len(texts)),
    }
    if float_model is not None:
        same = Path(model_path).resolve() == Path(float_model).resolve()
        reference = decoded if same else reference_indices(float_model, limit)
        result["agreement"] = 100.0 * float(
            np.mean([np.array_equal(a, b) for a, b in zip(decoded, reference)])
        )
    return result
