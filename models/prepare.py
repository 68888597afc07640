"""Write a recipe's calibration or evaluation feeds as .npz files the onnxq CLI can read.

    python models/prepare.py KEY --split calib|eval --out DIR [--limit N] [--data PATH]

One file per sample, ``00000.npz``, ``00001.npz``, ... (sorted names = feed order), each mapping input
name -> array. Then: ``onnxq quantize model.onnx --calib-data DIR``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the namespace package ``models`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import common  # noqa: E402

KEYS = (
    "efficientnet_lite0", "yolox_nano", "minilm_l6_v2", "ppocr_det", "ppocr_cls",  # BENCHMARKS.md's first five
    "ppocrv6_rec", "vit_saliency",  # "More real models" (issue 14 item 6)
    "silero_vad", "ddddocr_ocr", "romanizer_encoder", "romanizer_decoder",  # issue 15 item 4
)  # fmt: skip


def recipe(key: str):
    """The recipe module ``models.<key>``; ValueError naming the valid keys when unknown."""
    if key not in KEYS:
        raise ValueError(f"unknown model key {key!r}: choose one of {', '.join(KEYS)}")
    return importlib.import_module(f"models.{key}")


def write_feeds(key: str, split: str, out: Path, limit: int | None = None, data: Path | None = None) -> int:
    """Write the feeds of ``key``'s ``split`` into ``out`` (created); returns the number of files."""
    module = recipe(key)
    feeds = {"calib": module.calib_feeds, "eval": module.eval_feeds}[split](data, limit)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob("*.npz"))
    if stale:
        raise FileExistsError(f"{out} already holds {len(stale)} .npz files: use an empty folder")
    count = 0
    for count, feed in enumerate(feeds, start=1):
        buf = io.BytesIO()
        np_savez(buf, feed)
        common.atomic_write_bytes(out / f"{count - 1:05d}.npz", buf.getvalue())
    return count


def np_savez(buf: io.BytesIO, feed: dict) -> None:
    """Save one feed uncompressed (np.savez) with its input names as keys; each array keeps its shape (a
    scalar input such as Silero VAD's ``sr`` stays 0-d: ``np.ascontiguousarray`` would make it [1])."""
    import numpy as np

    np.savez(buf, **{name: np.asarray(value, order="C") for name, value in feed.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key", choices=KEYS)
    parser.add_argument("--split", choices=("calib", "eval"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder to write NNNNN.npz files into")
    parser.add_argument("--limit", type=int, default=None, help="at most this many samples")
    parser.add_argument("--data", type=Path, default=None, help="data root ($ONNXQ_DATA or ../shared/data)")
    args = parser.parse_args(argv)
    try:
        n = write_feeds(args.key, args.split, args.out, args.limit, args.data)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} feeds to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
