"""Options several subcommands share: calibration/evaluation data and quantization settings.

Numeric flags are range-checked when parsed (:func:`integer`, :func:`number`): a bad value is a usage
error (exit 2) naming the flag, before any work, instead of a message in Python-API terms later.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from onnxq.collect import data as data_mod
from onnxq.collect.folders import existing_dir
from onnxq.collect.images import IMAGE_SUFFIXES, ImageSpec, from_images
from onnxq.config import (
    ActivationSpec,
    Method,
    Mode,
    QuantConfig,
    Target,
    WeightFormat,
    WeightMethod,
    WeightSpec,
    load_config,
)
from onnxq.errors import ConfigError

log = logging.getLogger("onnxq")


def integer(minimum: int = 1, maximum: int | None = None):
    """argparse type: an integer in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            kind = "a positive integer" if minimum == 1 and maximum is None else "an integer"
            raise argparse.ArgumentTypeError(f"must be {kind} ({bound}), got {value}")
        return value
    return parse


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """argparse type: a finite float in the interval lo..hi (open ends where asked; None: unbounded)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        bad = not math.isfinite(value)
        bad |= lo is not None and (value <= lo if lo_open else value < lo)
        bad |= hi is not None and (value >= hi if hi_open else value > hi)
        if bad:
            raise argparse.ArgumentTypeError(f"must be a finite number {_interval(lo, hi, lo_open, hi_open)}, "
                                             f"got {text}")
        return value
    return parse


def _interval(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def _num_bins(text: str) -> int:
    value = integer(256)(text)
    if value % 128:
        raise argparse.ArgumentTypeError(f"must be a multiple of 128 and at least 256, got {value}")
    return value


def _folder_flag(prefix: str) -> str:
    """``--calib-data`` for prefix "calib", plain ``--data`` for prefix "data" (not ``--data-data``)."""
    return "--data" if prefix == "data" else f"--{prefix}-data"


# The image flags and their defaults, declared once: add_data_args uses them, and a flag away from its
# default was given (warn_default_normalisation, warn_image_flags_unused).
IMAGE_DEFAULTS = {"image_size": None, "resize": "short-side", "short_side": None, "pad_value": [114.0],
                  "pad_position": "center", "interpolation": "bilinear", "pixel_scale": 1 / 255, "mean": [0.0],
                  "std": [1.0], "bgr": False, "nhwc": False}
def add_data_args(p: argparse.ArgumentParser, prefix: str = "calib", required: bool = False) -> None:
    """--<prefix>-data DIR (npy/npz or images), --<prefix>-script FILE, --random N and image options.

    Prefix "data" gives ``--data DIR`` and ``--data-script FILE`` (both read back as ``args.data_data`` /
    ``args.data_script`` by :func:`build_source`)."""
    g = p.add_argument_group("data (one source)" if prefix == "data" else f"{prefix} data (one source)")
    g.add_argument(_folder_flag(prefix), dest=f"{prefix}_data", metavar="DIR",
                   help="folder of .npy (single input) or .npz (input name -> array) files, or of images")
    g.add_argument(f"--{prefix}-script", metavar="FILE",
                   help="Python file exposing load_data() that yields feed dicts (runs that file's code)")
    g.add_argument("--random", type=integer(1), metavar="N", help="N random samples from the declared shapes")
    g.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                   help="value of a dynamic dimension for --random, e.g. --dim batch=1 --dim seq=64")
    g.add_argument("--max-samples", type=integer(1), metavar="N", help="use at most N samples (N >= 1)")
    i = p.add_argument_group("image preprocessing (when the data folder holds images)")
    i.add_argument("--image-size", type=integer(1), nargs=2, metavar=("H", "W"), help="model input size (default: from model)")
    i.add_argument("--resize", choices=["stretch", "short-side", "letterbox"], default=IMAGE_DEFAULTS["resize"])
    i.add_argument("--short-side", type=integer(1), help="resize the short side to this before the centre crop")
    i.add_argument("--pad-value", type=number(0, 255), nargs="+", default=IMAGE_DEFAULTS["pad_value"], help="letterbox pad, 0-255 units")
    i.add_argument("--pad-position", choices=["center", "top-left"], default=IMAGE_DEFAULTS["pad_position"],
                   help="where the letterboxed image sits (YOLOX: top-left)")
    i.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"],
                   default=IMAGE_DEFAULTS["interpolation"])
    i.add_argument("--pixel-scale", type=number(0, lo_open=True), default=IMAGE_DEFAULTS["pixel_scale"], help="multiply pixels by this first (default 1/255)")
    i.add_argument("--mean", type=number(), nargs="+", default=IMAGE_DEFAULTS["mean"], help="per-channel mean subtracted after scaling")
    i.add_argument("--std", type=number(0, lo_open=True), nargs="+", default=IMAGE_DEFAULTS["std"], help="per-channel std divided after the mean")
    i.add_argument("--bgr", action="store_true", help="feed channels in BGR order")
    i.add_argument("--nhwc", action="store_true", help="feed NHWC instead of NCHW")


def _dims(values: list[str]) -> dict[str, int]:
    dims = {}
    for item in values:
        name, _, value = item.partition("=")
        if not name or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"--dim {item!r} must look like NAME=VALUE with an integer value >= 1, "
                              "e.g. --dim batch=1")
        dims[name] = int(value)
    return dims


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir() if f.is_file())


def build_source(args: argparse.Namespace, specs, prefix: str = "calib", seed: int = 0):
    """The DataSource the options describe; exactly one source must be given."""
    folder = getattr(args, f"{prefix}_data", None)
    script = getattr(args, f"{prefix}_script", None)
    given = [x for x in (folder, script, args.random) if x is not None]
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one data source: {_folder_flag(prefix)} DIR, --{prefix}-script FILE or --random N"
        )
    check_dims_use(args)
    if folder is not None:
        path = existing_dir(folder, f"{prefix} data folder")
        if _has_images(path):
            source = from_images(path, specs, image_spec(args))
            warn_default_normalisation(args, path)
        else:
            source = data_mod.from_dir(path, specs)
            warn_image_flags_unused(args, path)
    elif script is not None:
        source = data_mod.from_script(script)
    else:
        source = data_mod.random_data(specs, args.random, seed=seed, dims=_dims(args.dim))
    if args.max_samples is not None:
        source = data_mod.take(source, args.max_samples)
    return source


_NORMALISATION = ("pixel_scale", "mean", "std", "bgr")


def _given(args: argparse.Namespace, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, IMAGE_DEFAULTS[n]) != IMAGE_DEFAULTS[n]]


def warn_default_normalisation(args: argparse.Namespace, folder: Path) -> None:
    """Images read with no normalisation flag at all: say what was assumed, since a model trained with
    another one (mean/std, 0-255 pixels, BGR) calibrates on the wrong ranges without any error."""
    if not _given(args, _NORMALISATION):
        log.warning("images in %s are read as RGB scaled to [0, 1] (the defaults: --pixel-scale 1/255, no --mean/"
                    "--std, no --bgr); if the model was trained on other inputs, give its preprocessing", folder)


def warn_image_flags_unused(args: argparse.Namespace, folder: Path) -> None:
    given = _given(args, IMAGE_DEFAULTS)
    if given:
        log.warning("%s ignored: %s holds arrays (.npy/.npz), not images, and arrays are fed as they are",
                    ", ".join(given), folder)


def check_dims_use(args: argparse.Namespace) -> None:
    """--dim sizes the dynamic dimensions of --random data only: with any other source it cannot act."""
    if args.dim and args.random is None:
        raise ConfigError(f"--dim {args.dim[0]} only applies to --random N (other data brings its own shapes); "
                          "drop --dim")


def image_spec(args: argparse.Namespace) -> ImageSpec:
    return ImageSpec(
        size=tuple(args.image_size) if args.image_size else None,
        resize=args.resize,
        short_side=args.short_side,
        interpolation=args.interpolation,
        pad_value=args.pad_value[0] if len(args.pad_value) == 1 else tuple(args.pad_value),
        pad_position=args.pad_position,
        scale=args.pixel_scale,
        mean=args.mean[0] if len(args.mean) == 1 else tuple(args.mean),
        std=args.std[0] if len(args.std) == 1 else tuple(args.std),
        channel_order="bgr" if args.bgr else "rgb",
        layout="nhwc" if args.nhwc else "nchw",
    )


# Which quantization flags each kind of subcommand takes: a flag a subcommand cannot act on is not offered
# (argparse then names it as unrecognized) instead of being accepted and ignored.
PLAN_FLAGS = frozenset({"--config", "--target", "--per-tensor-weights", "--convtranspose-per-tensor",
                        "--exclude-node", "--exclude-op"})
COLLECT_FLAGS = frozenset({"--config", "--target", "--exclude-node", "--exclude-op", "--num-bins",
                           "--batch-statistic", "--batch-size", "--memory-mb", "--equalize"})


_QUANT_DESTS = ("config", "target", "method", "percentile", "num_bins", "batch_statistic", "weight_method",
                "weight_percentile", "reduce_range", "weight_format", "batch_size", "memory_mb")


def add_quant_args(p: argparse.ArgumentParser, scope: str = "all") -> None:
    """Quantization flags. ``scope``: "all" (quantize, sensitivity), "plan" (inspect: what shapes the plan),
    "collect" (calibrate: what shapes the statistics)."""
    wanted = {"all": None, "plan": PLAN_FLAGS, "collect": COLLECT_FLAGS}[scope]
    q = p.add_argument_group("quantization")

    def add(flag: str, **kw) -> None:
        if wanted is None or flag in wanted:
            q.add_argument(flag, **kw)

    add("--config", metavar="FILE", help="QuantConfig as .toml or .json; flags override it")
    add("--target", choices=["tensorrt", "ort-cpu"], help="runtime to place Q/DQ for (default tensorrt)")
    add("--method", choices=["auto", "minmax", "entropy", "mse", "percentile"],
        help="activation calibration (default auto: every method from one collection, the one whose outputs "
             "stay closest to float on held-out calibration samples)")
    add("--percentile", type=number(50, 100, lo_open=True), metavar="P",
        help="percentile of |x| for --method percentile, in (50, 100] (default 99.99); activations only "
             "(weights: --weight-percentile)")
    add("--num-bins", type=_num_bins, help="histogram bins, a multiple of 128 >= 256 (default 2048)")
    add("--batch-statistic", choices=["none", "max", "mean", "median", "modal"],
        help="range per batch, then aggregated (minmax); default none = one range over all samples")
    add("--weight-method", choices=["max", "mse", "percentile"], help="per-channel weight range")
    add("--weight-percentile", type=number(50, 100, lo_open=True), metavar="P",
        help="percentile of |w| per channel for --weight-method percentile, in (50, 100], linearly "
             "interpolated between weights (default 99.99)")
    add("--per-tensor-weights", action="store_true", help="one scale per weight tensor")
    add("--convtranspose-per-tensor", action="store_true",
        help="per-tensor ConvTranspose weights (TensorRT may reject per-channel deconvolution)")
    add("--reduce-range", choices=["on", "off"],
        help="7-bit weights (default: on for ort-cpu, whose x86 kernels saturate otherwise; off for tensorrt)")
    add("--weight-format", choices=["qdq", "dq-only"],
        help="float->Q->DQ (tensorrt default) or int8->DQ (the only form for ort-cpu)")
    add("--exclude-node", action="append", default=[], metavar="REGEX",
        help="leave nodes whose name matches REGEX (re.search) in float; repeatable")
    add("--exclude-op", action="append", default=[], metavar="TYPE",
        help="leave every node of this op type in float; repeatable")
    add("--batch-size", type=integer(1),
        help="samples per onnxruntime run (dynamic batch models only); default: automatic, up to 4 "
             "when batching is checked to change no value; 1 runs one sample at a time")
    add("--memory-mb", type=number(0, lo_open=True),
        help="memory for activations while calibrating, MB > 0 (default 1024); tensors that do not fit are "
             "collected in further passes over the data")
    add("--equalize", nargs="?", const="on", choices=["auto", "on", "off"],
        help="even out the channel ranges of depthwise-conv inputs before quantizing them (a Mul folded back "
             "into the depthwise weights; TensorRT target). auto (default): --method auto tries both and keeps "
             "the better; an explicit method: off. --equalize alone means on")


def build_config(args: argparse.Namespace) -> QuantConfig:
    # a subcommand offers only the flags it can act on (add_quant_args): the others read as not given
    args = argparse.Namespace(**{**dict.fromkeys(_QUANT_DESTS), "exclude_node": [], "exclude_op": [],
                                 "per_tensor_weights": False, "convtranspose_per_tensor": False,
                                 "equalize": None, **vars(args)})
    base = load_config(args.config) if args.config else QuantConfig()
    act, w = base.activations, base.weights
    target = Target(args.target) if args.target else base.target
    _check_flags(args, base, target)
    act = ActivationSpec(
        method=args.method or act.method,
        num_bins=args.num_bins or act.num_bins,
        percentile=args.percentile if args.percentile is not None else act.percentile,
        batch_statistic=args.batch_statistic or act.batch_statistic,
        guard_ratio=act.guard_ratio,
    )
    w = WeightSpec(
        method=args.weight_method or w.method,
        per_channel=w.per_channel and not args.per_tensor_weights,
        convtranspose_per_channel=w.convtranspose_per_channel and not args.convtranspose_per_tensor,
        # a format resolved for another target is re-resolved for this one
        format=args.weight_format or (w.format if target is base.target else None),
        percentile=args.weight_percentile if args.weight_percentile is not None else w.percentile,
        reduce_range={"on": True, "off": False}.get(args.reduce_range, w.reduce_range),
        bias_correction=w.bias_correction,
    )
    config = QuantConfig(
        target=target,
        activations=act,
        weights=w,
        exclude_nodes=tuple(base.exclude_nodes) + tuple(args.exclude_node),
        exclude_ops=tuple(base.exclude_ops) + tuple(args.exclude_op),
        batch_size=base.batch_size if args.batch_size is None else args.batch_size,
        seed=base.seed,
        collect_memory_mb=base.collect_memory_mb if getattr(args, "memory_mb", None) is None else args.memory_mb,
        equalize={"on": True, "off": False, "auto": None}.get(args.equalize, base.equalize),
        mode=Mode(args.quant_mode) if getattr(args, "quant_mode", None) else base.mode,
    )
    _check_effective(args, config)
    return config


def _check_flags(args: argparse.Namespace, base: QuantConfig, target: Target) -> None:
    """Flags that cannot act with the others given: a usage error naming both, before any work."""
    if getattr(args, "equalize", None) == "on" and target is Target.ORT_CPU:
        raise ConfigError("--equalize works with --target tensorrt only (it evens the channel ranges of depthwise "
                          "inputs for TensorRT's per-tensor int8 scales; ort-cpu is not implemented): drop one")
    if args.weight_format == WeightFormat.QDQ.value and target is Target.ORT_CPU:
        raise ConfigError("--weight-format qdq is not available with --target ort-cpu: onnxruntime's integer CPU "
                          "kernels take int8 weight initializers (dq-only, the ort-cpu form); drop --weight-format")


def _check_effective(args: argparse.Namespace, config: QuantConfig) -> None:
    """Options that the effective config leaves without effect: an error when given as a flag."""
    if args.percentile is not None and config.activations.method not in (Method.PERCENTILE, Method.AUTO):
        raise ConfigError(f"--percentile applies to --method percentile, not {config.activations.method.value}: "
                          "add --method percentile (for weights: --weight-method percentile --weight-percentile P)")
    if args.batch_statistic not in (None, "none") and config.activations.method not in (Method.MINMAX, Method.AUTO):
        raise ConfigError(f"--batch-statistic applies to --method minmax (and auto's minmax candidate), not "
                          f"{config.activations.method.value}: drop it or use --method minmax")
    if args.weight_percentile is not None and config.weights.method is not WeightMethod.PERCENTILE:
        raise ConfigError(f"--weight-percentile applies to --weight-method percentile, not "
                          f"{config.weights.method.value}: add --weight-method percentile")
    if config.equalize and config.target is Target.ORT_CPU:  # from a config file: --equalize is refused above
        log.warning("equalize = true in %s is not applied: it is implemented for the tensorrt target only",
                    args.config)
