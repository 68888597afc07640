"""The ``onnxq`` command line: one module per subcommand, each with add_parser(sub) and run(args) -> int.

Exit codes: 0 success, 1 failure while working (or a gate such as ``compare --min-sqnr`` failing),
2 bad usage or bad input. Errors print one line, never a traceback (``-v`` shows it for bug reports).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from onnxq import __version__
from onnxq.errors import OnnxqError

COMMANDS = ("quantize", "inspect", "calibrate", "compare", "sensitivity", "demo")

log = logging.getLogger("onnxq")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other onnxq error (the usage is one -h away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"onnxq: error: {message} (usage: {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="onnxq", description="Post-training INT8 quantization of ONNX models for TensorRT and onnxruntime."
    )
    parser.add_argument("--version", action="version", version=f"onnxq {__version__}")
    _add_logging_args(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"onnxq.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"onnxq.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    for subparser in sub.choices.values():
        _add_logging_args(subparser, default=argparse.SUPPRESS)
    return parser


def _add_logging_args(p: argparse.ArgumentParser, default) -> None:
    """-v/-q, on the main parser and again on each subcommand (so ``onnxq quantize ... -q`` works too).

    On subcommands the defaults are SUPPRESS: a flag given before the subcommand is not reset by it."""
    g = p.add_argument_group("logging") if default is argparse.SUPPRESS else p
    g.add_argument("-v", "--verbose", action="count", default=0 if default is None else default,
                   help="more logging (-vv for debug)")
    g.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                   help="errors only, no progress bar")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error line
        return int(exc.code or 0)
    if extra:  # named with the subcommand: most are flags another subcommand takes
        prog = f"onnxq {args.command}" if getattr(args, "command", None) else "onnxq"
        print(f"onnxq: error: {prog} does not take {' '.join(extra)} (its options: {prog} -h)", file=sys.stderr)
        return 2
    if not args.command:
        parser.print_help()
        return 2
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="onnxq: %(levelname)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except OnnxqError as exc:
        print(f"onnxq: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onnxq: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`onnxq inspect m.onnx | head`): the reader has what it wanted
        _silence_stdout()
        return 0
    except Exception as exc:  # a bug: keep the promise of no traceback unless asked
        if args.verbose:
            raise
        print(f"onnxq: internal error: {type(exc).__name__}: {exc} (run with -v for details and report it)",
              file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (captured stdout): nothing will be flushed to a pipe
        pass


def progress_enabled(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()
