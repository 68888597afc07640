"""Calibration data from a folder of images, with the preprocessing written out explicitly.

Why explicit: a model must be calibrated on what it sees in deployment. A loader that guesses (many
quantizer examples hard-code ImageNet's mean and std) calibrates a BGR 0..255 detector on RGB 0..1 data
and still "works": the scales are merely wrong. So every step is a field of :class:`ImageSpec`:

    decode (Pillow) -> RGB -> resize -> float32 pixels x (0..255) -> channel order (RGB | BGR)
    -> y = (x * scale - mean) / std -> layout (NCHW | NHWC) -> batch axis of 1 -> the input's dtype

``mean`` and ``std`` are listed in the model's channel order (after an RGB -> BGR swap). The output dtype
is the model input's: float inputs get the normalised values, uint8/int inputs the raw pixels (then
scale must be 1, mean 0 and std 1).

Resize modes follow their reference implementations, so calibration sees deployment's pixels:
- ``stretch``: resize to (h, w), ignoring the aspect ratio.
- ``short-side``: resize the short side to ``short_side`` and the long one to int(s * long / short)
  (torchvision ``Resize(int)``), then crop (h, w) at offsets round((H' - h) / 2) (``CenterCrop``; Python's
  round, so halves go to even). Without ``short_side``, the image is scaled just enough to cover (h, w).
- ``letterbox``: scale by r = min(h / H, w / W), resize to (round(H r), round(W r)), and pad with
  ``pad_value`` (raw pixel units, before normalisation) centred (Ultralytics YOLOv5/8: top = floor of half
  the padding) or at the top-left (YOLOX pads bottom/right with 114).
Pillow resamples with antialiasing when shrinking, like torchvision on PIL images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from onnxq.collect.feeds import DataSource, Feed, InputSpec, PathArg
from onnxq.collect.folders import existing_dir, list_files
from onnxq.errors import CalibrationDataError, ConfigError, one_line

__all__ = ["ChannelOrder", "ImageSpec", "Interpolation", "Layout", "PadPosition", "ResizeMode",
           "IMAGE_SUFFIXES", "from_images", "load_image", "preprocess_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ResizeMode(str, Enum):
    STRETCH = "stretch"
    SHORT_SIDE = "short-side"
    LETTERBOX = "letterbox"


class Interpolation(str, Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class PadPosition(str, Enum):
    CENTER = "center"
    TOP_LEFT = "top-left"


class ChannelOrder(str, Enum):
    RGB = "RGB"
    BGR = "BGR"


class Layout(str, Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"


_RESAMPLE = {Interpolation.NEAREST: Image.Resampling.NEAREST,
             Interpolation.BILINEAR: Image.Resampling.BILINEAR,
             Interpolation.BICUBIC: Image.Resampling.BICUBIC}

Triple = tuple[float, float, float]


def _enum(cls: type[Enum], value: object, field: str) -> Enum:
    if isinstance(value, cls):
        return value
    for member in cls:
        if isinstance(value, str) and value.lower().replace("_", "-") == member.value.lower():
            return member
    choices = ", ".join(m.value for m in cls)
    raise ConfigError(f"ImageSpec.{field} '{value}' is not one of: {choices}")


def _triple(value: Union[float, Sequence[float]], field: str) -> Triple:
    values = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
    if len(values) != 3:
        raise ConfigError(f"ImageSpec.{field} needs one number or three (one per channel), got {value!r}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


@dataclass(frozen=True)
class ImageSpec:
    """How an image file becomes a model input (steps and formulas in the module docstring).

    ``size`` is (height, width); None takes it from the model input when static. Defaults give RGB
    values in [0, 1], NCHW, bilinear short-side resize + centre crop.
    """

    size: tuple[int, int] | None = None
    resize: ResizeMode = ResizeMode.SHORT_SIDE
    short_side: int | None = None
    interpolation: Interpolation = Interpolation.BILINEAR
    pad_value: Union[float, Triple] = 114.0
    pad_position: PadPosition = PadPosition.CENTER
    scale: float = 1 / 255
    mean: Union[float, Triple] = (0.0, 0.0, 0.0)
    std: Union[float, Triple] = (1.0, 1.0, 1.0)
    channel_order: ChannelOrder = ChannelOrder.RGB
    layout: Layout = Layout.NCHW

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name, cls in (("resize", ResizeMode), ("interpolation", Interpolation),
                          ("pad_position", PadPosition), ("channel_order", ChannelOrder), ("layout", Layout)):
            put(name, _enum(cls, getattr(self, name), name))
        for name in ("pad_value", "mean", "std"):
            put(name, _triple(getattr(self, name), name))
        if any(s == 0 for s in self.std):
            raise ConfigError(f"ImageSpec.std {self.std} contains 0; every channel's std must be non-zero")
        if self.size is not None:
            if len(self.size) != 2 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in self.size):
                raise ConfigError(f"ImageSpec.size must be (height, width) positive integers, got {self.size!r}")
            put("size", (int(self.size[0]), int(self.size[1])))
        if self.short_side is not None:
            if self.short_side < 1:
                raise ConfigError(f"ImageSpec.short_side must be positive, got {self.short_side}")
            if self.size is not None and self.short_side < max(self.size):
                raise ConfigError(f"ImageSpec.short_side {self.short_side} is smaller than the crop "
                                  f"{self.size[0]}x{self.size[1]}; use a short side >= {max(self.size)}")

    def describe(self) -> str:
        """One line for the report: every step, in order."""
        size = "model size" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        interp = self.interpolation.value
        if self.resize is ResizeMode.SHORT_SIDE:
            side = f"short side {self.short_side}" if self.short_side else "short side to cover the crop"
            geometry = f"resize {side} {interp} + centre crop {size}"
        elif self.resize is ResizeMode.LETTERBOX:
            geometry = f"letterbox {size} {interp}, pad {_fmt(self.pad_value)} {self.pad_position.value}"
        else:
            geometry = f"stretch to {size} {interp}"
        return (f"{geometry}, {self.channel_order.value}, (x*{self.scale:.6g} - {_fmt(self.mean)}) / "
                f"{_fmt(self.std)}, {self.layout.value}")


def _fmt(values: Triple) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:g}" for v in values) + ")"


# ----------------------------------------------------------------------------- pixels

def _resize_short_side(image: Image.Image, spec: ImageSpec, resample: int) -> Image.Image:
    (h, w), (width, height) = spec.size, image.size
    if spec.short_side is not None:  # torchvision Resize(int): truncating the long side
        short, long = sorted((width, height))
        new_long = int(spec.short_side * long / short)
        new = (spec.short_side, new_long) if width <= height else (new_long, spec.short_side)
    else:  # just cover (h, w)
        ratio = max(h / height, w / width)
        new = (max(w, round(width * ratio)), max(h, round(height * ratio)))
    image = image.resize(new, resample)
    top, left = int(round((new[1] - h) / 2.0)), int(round((new[0] - w) / 2.0))
    return image.crop((left, top, left + w, top + h))


def _letterbox(image: Image.Image, spec: ImageSpec, resample: int) -> np.ndarray:
    (h, w), (width, height) = spec.size, image.size
    ratio = min(h / height, w / width)
    new_h, new_w = min(h, max(1, round(height * ratio))), min(w, max(1, round(width * ratio)))
    pixels = np.asarray(image.resize((new_w, new_h), resample), dtype=np.float32)
    canvas = np.empty((h, w, 3), dtype=np.float32)
    canvas[...] = np.asarray(spec.pad_value, dtype=np.float32)
    top, left = ((h - new_h) // 2, (w - new_w) // 2) if spec.pad_position is PadPosition.CENTER else (0, 0)
    canvas[top:top + new_h, left:left + new_w] = pixels
    return canvas


def preprocess_image(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """One decoded image -> float32 array with a batch axis of 1, in ``spec.layout``.

    ``spec.size`` must be set (from_images fills it from the model). Formula and geometry: module docstring.
    """
    if spec.size is None:
        raise ConfigError("preprocess_image needs ImageSpec.size (height, width)")
    image = image if image.mode == "RGB" else image.convert("RGB")
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize is ResizeMode.LETTERBOX:
        pixels = _letterbox(image, spec, resample)
    else:
        if spec.resize is ResizeMode.SHORT_SIDE:
            image = _resize_short_side(image, spec, resample)
        else:
            image = image.resize((spec.size[1], spec.size[0]), resample)
        pixels = np.asarray(image, dtype=np.float32)
    if spec.channel_order is ChannelOrder.BGR:
        pixels = pixels[..., ::-1]
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    pixels = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout is Layout.NCHW:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels[np.newaxis], dtype=np.float32)


def load_image(path: PathArg, spec: ImageSpec) -> np.ndarray:
    """Decode one image file and :func:`preprocess_image` it; an unreadable file names itself."""
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess_image(image, spec)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CalibrationDataError(f"cannot read image '{path}': {one_line(exc)}; remove or replace "
                                   "the file") from exc


# ----------------------------------------------------------------------------- source

def _resolve(spec: InputSpec, image_spec: ImageSpec) -> ImageSpec:
    """``image_spec`` with its size filled from the model, after checking the input can take images."""
    layout = image_spec.layout
    if spec.shape is not None and len(spec.shape) != 4:
        raise CalibrationDataError(
            f"input '{spec.name}' is {spec.describe()}, not a 4-D image batch; an image folder feeds "
            "NCHW or NHWC inputs: give .npy/.npz files or a load_data() script instead")
    if spec.dtype.kind not in "fiu" or (spec.dtype.kind != "f" and (
            image_spec.scale != 1 or any(image_spec.mean) or any(s != 1 for s in image_spec.std))):
        raise CalibrationDataError(
            f"input '{spec.name}' is {spec.describe()}: integer image inputs take raw pixels, so give "
            "--pixel-scale 1 --mean 0 --std 1 (ImageSpec(scale=1, mean=0, std=1) in Python), or the data as "
            ".npy/.npz files")
    shape = spec.shape or (None,) * 4
    channel_axis, hw_axes = (1, (2, 3)) if layout is Layout.NCHW else (3, (1, 2))
    channels = shape[channel_axis]
    other_channels = shape[3 if layout is Layout.NCHW else 1]
    # A symbolic channel axis opposite a fixed 3 (e.g. [N, H, W, 3] read as NCHW) is the other layout too:
    # read as given, the image would be 3 pixels wide, and the size check below would blame the size.
    if (isinstance(channels, int) and channels != 3) or (not isinstance(channels, int) and other_channels == 3):
        other = Layout.NHWC if layout is Layout.NCHW else Layout.NCHW
        looks = other_channels == 3
        flag = "add --nhwc" if other is Layout.NHWC else "drop --nhwc"
        hint = (f"the input looks {other.value}: {flag} (ImageSpec(layout='{other.value}') in Python)" if looks else
                "the image loader makes 3-channel images: give .npy/.npz files for other channel counts")
        has = f"{channels} channels, not 3" if isinstance(channels, int) else f"a {other_channels}-pixel width"
        raise CalibrationDataError(f"input '{spec.name}' is {spec.describe()}, which in {layout.value} "
                                   f"layout has {has}; {hint}")
    model_hw = tuple(shape[a] for a in hw_axes)
    if image_spec.size is None:
        if not all(isinstance(d, int) for d in model_hw):
            raise CalibrationDataError(
                f"input '{spec.name}' is {spec.describe()}, with a dynamic height or width; give the "
                "image size: --image-size HxW (ImageSpec(size=(h, w)) in Python)")
        return dataclasses.replace(image_spec, size=model_hw)
    for want, got in zip(model_hw, image_spec.size):
        if isinstance(want, int) and want != got:
            raise CalibrationDataError(
                f"image size {image_spec.size[0]}x{image_spec.size[1]} does not fit input '{spec.name}' "
                f"{spec.describe()}; drop --image-size to use the model's (ImageSpec(size=None) in Python)")
    return image_spec


def _to_input_dtype(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.dtype.kind == "f":
        return pixels.astype(spec.dtype, copy=False)
    info = np.iinfo(spec.dtype)
    return np.clip(np.rint(pixels), info.min, info.max).astype(spec.dtype)


def from_images(path: PathArg, specs: Sequence[InputSpec], image_spec: ImageSpec | None = None) -> DataSource:
    """Feeds from a folder of images (.jpg .jpeg .png .bmp .webp, sorted by name, read lazily), one image
    per feed, for a model with a single image input. Grayscale, palette and RGBA images become RGB.
    Feeds are right by construction except a static batch > 1: validate after :func:`batched`."""
    specs = tuple(specs)
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise CalibrationDataError(
            f"an image folder feeds a model with one image input, but this model has {len(specs)} inputs "
            f"({names}); give one .npz per sample or a load_data() script instead")
    spec = specs[0]
    resolved = _resolve(spec, image_spec or ImageSpec())
    folder = existing_dir(path, "calibration image")
    files = list_files(folder, IMAGE_SUFFIXES)
    if not files:
        raise CalibrationDataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in '{folder}'; put the "
                                   "calibration images directly in that folder (subfolders are not read)")

    def opener() -> Iterator[Feed]:
        for file in files:
            yield {spec.name: _to_input_dtype(load_image(file, resolved), spec)}

    return DataSource(opener, f"{len(files)} images in {path} ({resolved.describe()})", len(files))
