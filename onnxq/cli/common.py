"""Options several subcommands share: calibration/evaluation data and quantization settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxq.collect import data as data_mod
from onnxq.collect.images import IMAGE_SUFFIXES, ImageSpec, from_images
from onnxq.config import ActivationSpec, QuantConfig, WeightSpec, load_config
from onnxq.errors import ConfigError


def _folder_flag(prefix: str) -> str:
    """``--calib-data`` for prefix "calib", plain ``--data`` for prefix "data" (not ``--data-data``)."""
    return "--data" if prefix == "data" else f"--{prefix}-data"


def add_data_args(p: argparse.ArgumentParser, prefix: str = "calib", required: bool = False) -> None:
    """--<prefix>-data DIR (npy/npz or images), --<prefix>-script FILE, --random N and image options.

    Prefix "data" gives ``--data DIR`` and ``--data-script FILE`` (both read back as ``args.data_data`` /
    ``args.data_script`` by :func:`build_source`)."""
    g = p.add_argument_group("data (one source)" if prefix == "data" else f"{prefix} data (one source)")
    g.add_argument(_folder_flag(prefix), dest=f"{prefix}_data", metavar="DIR",
                   help="folder of .npy (single input) or .npz (input name -> array) files, or of images")
    g.add_argument(f"--{prefix}-script", metavar="FILE",
                   help="Python file exposing load_data() that yields feed dicts (runs that file's code)")
    g.add_argument("--random", type=int, metavar="N", help="N random samples from the declared shapes")
    g.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                   help="value of a dynamic dimension for --random, e.g. --dim batch=1 --dim seq=64")
    g.add_argument("--max-samples", type=int, metavar="N", help="use at most N samples")
    i = p.add_argument_group("image preprocessing (when the data folder holds images)")
    i.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="model input size (default: from model)")
    i.add_argument("--resize", choices=["stretch", "short-side", "letterbox"], default="short-side")
    i.add_argument("--short-side", type=int, help="resize the short side to this before the centre crop")
    i.add_argument("--pad-value", type=float, nargs="+", default=[114.0], help="letterbox pad, 0-255 units")
    i.add_argument("--pad-position", choices=["center", "top-left"], default="center",
                   help="where the letterboxed image sits (YOLOX: top-left)")
    i.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"], default="bilinear")
    i.add_argument("--pixel-scale", type=float, default=1 / 255, help="multiply pixels by this first (default 1/255)")
    i.add_argument("--mean", type=float, nargs="+", default=[0.0], help="per-channel mean subtracted after scaling")
    i.add_argument("--std", type=float, nargs="+", default=[1.0], help="per-channel std divided after the mean")
    i.add_argument("--bgr", action="store_true", help="feed channels in BGR order")
    i.add_argument("--nhwc", action="store_true", help="feed NHWC instead of NCHW")


def _dims(values: list[str]) -> dict[str, int]:
    dims = {}
    for item in values:
        name, _, value = item.partition("=")
        if not name or not value.strip().isdigit():
            raise ConfigError(f"--dim {item!r} must look like NAME=VALUE with an integer value, e.g. --dim batch=1")
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
    if folder is not None:
        path = data_mod.existing_dir(folder, f"{prefix} data folder")
        if _has_images(path):
            source = from_images(path, specs, image_spec(args))
        else:
            source = data_mod.from_dir(path, specs)
    elif script is not None:
        source = data_mod.from_script(script)
    else:
        source = data_mod.random_data(specs, args.random, seed=seed, dims=_dims(args.dim))
    if args.max_samples:
        source = data_mod.take(source, args.max_samples)
    return source


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


def add_quant_args(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("quantization")
    q.add_argument("--config", metavar="FILE", help="QuantConfig as .toml or .json; flags override it")
    q.add_argument("--target", choices=["tensorrt", "ort-cpu"], help="runtime to place Q/DQ for (default tensorrt)")
    q.add_argument("--method", choices=["minmax", "entropy", "mse", "percentile"], help="activation calibration")
    q.add_argument("--percentile", type=float, help="percentile for --method percentile (default 99.99)")
    q.add_argument("--num-bins", type=int, help="histogram bins (default 2048)")
    q.add_argument("--batch-statistic", choices=["none", "max", "mean", "median", "modal"],
                   help="range per batch, then aggregated (minmax); default none = one range over all samples")
    q.add_argument("--weight-method", choices=["max", "mse", "percentile"], help="per-channel weight range")
    q.add_argument("--per-tensor-weights", action="store_true", help="one scale per weight tensor")
    q.add_argument("--convtranspose-per-tensor", action="store_true",
                   help="per-tensor ConvTranspose weights (TensorRT may reject per-channel deconvolution)")
    q.add_argument("--reduce-range", choices=["on", "off"],
                   help="7-bit weights (default: on for ort-cpu, whose x86 kernels saturate otherwise; off for tensorrt)")
    q.add_argument("--weight-format", choices=["qdq", "dq-only"], help="float->Q->DQ (default) or int8->DQ")
    q.add_argument("--exclude-node", action="append", default=[], metavar="REGEX",
                   help="leave nodes whose name matches REGEX (re.search) in float; repeatable")
    q.add_argument("--exclude-op", action="append", default=[], metavar="TYPE",
                   help="leave every node of this op type in float; repeatable")
    q.add_argument("--batch-size", type=int,
                   help="samples per onnxruntime run (dynamic batch models only); default: automatic, up to 4 "
                        "when batching is checked to change no value; 1 runs one sample at a time")
    q.add_argument("--memory-mb", type=float, help="memory for activations while calibrating (default 1024)")
    q.add_argument("--equalize", action="store_true",
                   help="even out the channel ranges of depthwise-conv inputs before quantizing them "
                        "(a Mul folded back into the depthwise weights; TensorRT target)")


def build_config(args: argparse.Namespace) -> QuantConfig:
    base = load_config(args.config) if getattr(args, "config", None) else QuantConfig()
    act, w = base.activations, base.weights
    act = ActivationSpec(
        method=args.method or act.method,
        num_bins=args.num_bins or act.num_bins,
        percentile=args.percentile if args.percentile is not None else act.percentile,
        batch_statistic=args.batch_statistic or act.batch_statistic,
    )
    w = WeightSpec(
        method=args.weight_method or w.method,
        per_channel=w.per_channel and not args.per_tensor_weights,
        convtranspose_per_channel=w.convtranspose_per_channel and not args.convtranspose_per_tensor,
        format=args.weight_format or w.format,
        percentile=w.percentile,
        reduce_range={"on": True, "off": False}.get(args.reduce_range, w.reduce_range),
    )
    return QuantConfig(
        target=args.target or base.target,
        activations=act,
        weights=w,
        exclude_nodes=tuple(base.exclude_nodes) + tuple(args.exclude_node),
        exclude_ops=tuple(base.exclude_ops) + tuple(args.exclude_op),
        batch_size=base.batch_size if args.batch_size is None else args.batch_size,
        seed=base.seed,
        collect_memory_mb=base.collect_memory_mb if getattr(args, "memory_mb", None) is None else args.memory_mb,
        equalize=base.equalize or bool(getattr(args, "equalize", False)),
    )
