"""The embedded default: a real model and data made on the spot, so a fresh install shows a real run.

Model: PaddleOCR's text-direction classifier (ch_ppocr_mobile_v2.0_cls, Apache-2.0, shipped with the
rapidocr-onnxruntime package), input [B, 3, 48, 192] BGR, (x/255 - 0.5)/0.5; output [B, 2], index 1 means
"rotated 180 degrees". Data: text lines rendered with Pillow's built-in font on noisy light
backgrounds, half of them rotated 180 degrees, so the label is known. No network, no ../shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = (
    "invoice total amount due date customer order number quantity price tax shipping address phone "
    "account balance payment received thank you for your business reference item description unit "
    "subtotal discount station platform departure arrival gate seat class ticket valid until"
).split()

HEIGHT, WIDTH = 48, 192


def model_path() -> Path:
    return Path(str(resources.files("onnxq") / "assets" / "ppocr_cls.onnx"))


def render_line(rng: np.random.Generator) -> Image.Image:
    """One text-line crop: 1-3 words, random size, ink and background, slight blur."""
    text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
    size = int(rng.integers(22, 34))
    font = ImageFont.load_default(size=size)
    bg = tuple(int(v) for v in rng.integers(170, 256, size=3))
    ink = tuple(int(v) for v in rng.integers(0, 80, size=3))
    width = int(font.getlength(text)) + int(rng.integers(8, 24))
    img = Image.new("RGB", (max(width, 48), HEIGHT), bg)
    noise = rng.normal(0, 8, size=(HEIGHT, img.width, 3))
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).text((int(rng.integers(2, 8)), (HEIGHT - size) // 2 - 2), text, font=font, fill=ink)
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8))))


def to_input(img: Image.Image) -> np.ndarray:
    """PaddleOCR's cls preprocessing: keep aspect ratio to height 48, at most 192 wide, right-pad with 0."""
    w = min(WIDTH, max(1, int(round(img.width * HEIGHT / img.height))))
    resized = np.asarray(img.resize((w, HEIGHT), Image.BILINEAR), np.float32)[:, :, ::-1]  # RGB -> BGR
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)
    out[:, :, :w] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def samples(count: int, seed: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(feed, label) pairs; label 1 = rotated 180 degrees."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = render_line(rng)
        label = i % 2
        if label:
            img = img.rotate(180)
        yield {"x": to_input(img)[None]}, label


def feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    return [f for f, _ in samples(count, seed)]
