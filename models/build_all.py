"""Build the benchmark float models into the cache and print their paths and float metrics.

    python models/build_all.py [--only KEY ...] [--no-eval] [--cache DIR] [--data PATH]

Exit code 0 when every requested model built (and evaluated), 1 otherwise; one line per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the namespace package ``models`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.prepare import KEYS, recipe  # noqa: E402


def build_one(key: str, cache: Path | None, data: Path | None, evaluate: bool) -> dict:
    """Build (and evaluate) one model; returns a JSON-able record with times, path, metrics or error."""
    record: dict = {"key": key}
    try:
        module = recipe(key)
        t0 = time.perf_counter()
        path = module.build(cache)
        record.update(path=str(path), build_s=round(time.perf_counter() - t0, 1))
        if evaluate:
            t0 = time.perf_counter()
            record["metrics"] = module.evaluate(path, data)
            record["eval_s"] = round(time.perf_counter() - t0, 1)
    except Exception as exc:  # noqa: BLE001 - report and go on with the other models
        record["error"] = f"{type(exc).__name__}: {exc}"
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=KEYS, default=list(KEYS))
    parser.add_argument("--no-eval", action="store_true", help="build only")
    parser.add_argument("--cache", type=Path, default=None, help="default $ONNXQ_MODELS or models/.cache")
    parser.add_argument("--data", type=Path, default=None, help="default $ONNXQ_DATA or ../shared/data")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    ok = True
    for key in args.only:
        rec = build_one(key, args.cache, args.data, not args.no_eval)
        ok &= "error" not in rec
        if args.json:
            print(json.dumps(rec), flush=True)
        elif "error" in rec:
            print(f"{key:20s} FAILED {rec['error']}", flush=True)
        else:
            metrics = " ".join(f"{k}={v:.2f}" for k, v in rec.get("metrics", {}).items())
            print(f"{key:20s} {rec['path']}  build {rec['build_s']}s  {metrics}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
