"""The pipeline outside calibration: are the written models the same bytes, and how long does the rest take?

A refactor of the pipeline must not change what onnxq writes, and should make everything around the
calibration run cheaper. Two measurements, each runnable on any checkout (``--tree`` runs them on another
checkout, e.g. a ``git worktree`` of an older commit, in a subprocess, side by side with this one):

    python benchmarks/pipeline.py snapshot OUT_DIR [--tree PATH]     # quantize the five models x 3 configs
    python benchmarks/pipeline.py diff DIR_A DIR_B                   # which tensors differ, by how many steps
    python benchmarks/pipeline.py timing [--tree PATH] [--repeat 5]  # quantize wall time minus calibration
    python benchmarks/pipeline.py timing --against PATH [--rounds 6]  # this checkout and PATH, alternating

``snapshot`` quantizes every benchmark model (models/.cache) with the TensorRT target (minmax, entropy) and
the ort-cpu target (minmax) on the first ``--samples`` calibration feeds of its recipe and writes the
models with a manifest of their SHA-256. ``diff`` compares two snapshots tensor by tensor: for each
initializer that differs, the largest change in integer steps (integer tensors) or the relative change
(scales and other floats). ``timing`` times ``onnxq.quantize`` on EfficientNet-Lite0 and MiniLM with the
data in memory and reports the median of the wall time outside calibration (everything but the
collection pass: load, preprocess, plan, solve, rewrite, check, save). With ``--against``, rounds
alternate between this checkout and the other (one run of each model per round and checkout), so that a
machine whose speed drifts (a shared 2-core VM) slows both sides alike; the medians are printed side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
REPO = Path(os.environ.get("ONNXQ_PIPELINE_TREE") or HERE)  # the checkout whose onnxq is measured
sys.path.insert(0, str(REPO))  # run from a checkout without installing; `models` is a namespace package

import numpy as np  # noqa: E402
import onnx  # noqa: E402

KEYS = ("efficientnet_lite0", "yolox_nano", "minilm_l6_v2", "ppocr_det", "ppocr_cls")
CONFIGS = {"trt_minmax": ("tensorrt", "minmax"), "trt_entropy": ("tensorrt", "entropy"),
           "ortcpu_minmax": ("ort-cpu", "minmax")}
TIMED = ("efficientnet_lite0", "minilm_l6_v2")


def _feeds(key: str, samples: int) -> list[dict]:
    from models.prepare import recipe

    return list(recipe(key).calib_feeds(None, samples))


def snapshot(out: Path, samples: int) -> dict[str, str]:
    import onnxq
    from models.prepare import recipe

    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for key in KEYS:
        path = recipe(key).build()
        feeds = _feeds(key, samples)
        for name, (target, method) in CONFIGS.items():
            config = onnxq.QuantConfig(target=target, activations=onnxq.ActivationSpec(method=method))
            saved = onnxq.quantize(str(path), feeds, config).save(out / f"{key}.{name}.onnx")
            manifest[saved.name] = hashlib.sha256(saved.read_bytes()).hexdigest()
            print(f"{saved.name}  {manifest[saved.name][:16]}", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _steps(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype} -> {b.shape} {b.dtype}"
    if a.dtype.kind in "iu":
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        return f"{int((diff > 0).sum())} of {a.size} values differ, by at most {int(diff.max())} integer steps"
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    rel = float((diff / np.maximum(np.abs(a.astype(np.float64)), 1e-30)).max())
    return f"{int((diff > 0).sum())} of {a.size} values differ, largest relative change {rel:.3g}"


def diff(a_dir: Path, b_dir: Path) -> int:
    a_manifest = json.loads((a_dir / "manifest.json").read_text())
    b_manifest = json.loads((b_dir / "manifest.json").read_text())
    differing = 0
    for name in sorted(a_manifest):
        if b_manifest.get(name) == a_manifest[name]:
            print(f"{name}: identical bytes")
            continue
        differing += 1
        ma, mb = onnx.load(str(a_dir / name)), onnx.load(str(b_dir / name))
        ia = {t.name: onnx.numpy_helper.to_array(t) for t in ma.graph.initializer}
        ib = {t.name: onnx.numpy_helper.to_array(t) for t in mb.graph.initializer}
        lines = [f"  {k}: only in A" for k in sorted(set(ia) - set(ib))]
        lines += [f"  {k}: only in B" for k in sorted(set(ib) - set(ia))]
        lines += [f"  {k}: {_steps(ia[k], ib[k])}" for k in sorted(set(ia) & set(ib))
                  if ia[k].tobytes() != ib[k].tobytes() or ia[k].dtype != ib[k].dtype]
        same_graph = [(n.op_type, list(n.input), list(n.output)) for n in ma.graph.node] == \
            [(n.op_type, list(n.input), list(n.output)) for n in mb.graph.node]
        print(f"{name}: DIFFERENT bytes; nodes {'identical' if same_graph else 'DIFFER'}; "
              f"{len(lines)} initializers differ")
        print("\n".join(lines[:40]) + ("\n  ..." if len(lines) > 40 else ""))
    return differing


def timing(repeat: int, samples: int) -> dict[str, float]:
    import onnxq
    from models.prepare import recipe

    result = {}
    for key in TIMED:
        path = str(recipe(key).build())
        feeds = _feeds(key, samples)
        outside = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeat):
                t = time.perf_counter()
                # minmax: the pipeline's own cost (auto's search is timed by benchmarks/auto_method.py)
                res = onnxq.quantize(path, feeds, onnxq.QuantConfig(activations=onnxq.ActivationSpec(method="minmax")))
                res.save(Path(tmp) / "q.onnx")
                wall = time.perf_counter() - t
                outside.append(wall - res.report.timings.get("calibrate", 0.0))
        result[key] = statistics.median(outside)
        print(f"{key}: outside calibration {result[key]:.3f} s (median of {repeat}: "
              f"{', '.join(f'{v:.2f}' for v in outside)})", flush=True)
    return result


def _in_tree(tree: Path, argv: list[str]) -> None:
    """Run this script's subcommand on another checkout (its onnxq and models/), in a subprocess."""
    env = {**os.environ, "ONNXQ_PIPELINE_TREE": str(tree), "ONNXQ_MODELS": str(HERE / "models" / ".cache")}
    subprocess.run([sys.executable, __file__, *argv, "--_self"], env=env, check=True, cwd=tree)


_TIMED_LINE = re.compile(r"^(\w+): outside calibration ([0-9.]+) s")


def against(tree: Path, rounds: int, samples: int) -> dict[str, tuple[float, float]]:
    """Median outside-calibration time per model, (this checkout, ``tree``), over alternating rounds."""
    runs: dict[Path, dict[str, list[float]]] = {HERE: {}, tree: {}}
    for r in range(rounds):
        for checkout in ((HERE, tree) if r % 2 == 0 else (tree, HERE)):  # neither side always goes first
            env = {**os.environ, "ONNXQ_PIPELINE_TREE": str(checkout),
                   "ONNXQ_MODELS": str(HERE / "models" / ".cache")}
            out = subprocess.run([sys.executable, __file__, "timing", "--repeat", "1", "--samples", str(samples),
                                  "--_self"], env=env, check=True, cwd=checkout, capture_output=True, text=True)
            for line in out.stdout.splitlines():
                m = _TIMED_LINE.match(line)
                if m:
                    runs[checkout].setdefault(m.group(1), []).append(float(m.group(2)))
    result = {}
    for key in TIMED:
        mine, theirs = statistics.median(runs[HERE][key]), statistics.median(runs[tree][key])
        result[key] = (mine, theirs)
        print(f"{key}: outside calibration {mine:.3f} s here, {theirs:.3f} s at {tree} "
              f"({100 * (mine - theirs) / theirs:+.0f} %; medians of {rounds} alternating rounds)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out", type=Path)
    d = sub.add_parser("diff")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    t = sub.add_parser("timing")
    t.add_argument("--repeat", type=int, default=5)
    t.add_argument("--against", type=Path, help="time this checkout and that one, alternating rounds")
    t.add_argument("--rounds", type=int, default=6, help="rounds with --against (default 6)")
    for q in (s, t):
        q.add_argument("--samples", type=int, default=16, help="calibration feeds per model (default 16)")
        q.add_argument("--tree", type=Path, help="run on this checkout instead (e.g. a git worktree)")
        q.add_argument("--_self", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if getattr(args, "tree", None) is not None and not args._self:
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        k = rest.index("--tree")
        _in_tree(args.tree.resolve(), rest[:k] + rest[k + 2:])
        return 0
    if args.command == "snapshot":
        snapshot(args.out.resolve(), args.samples)
    elif args.command == "diff":
        return 1 if diff(args.a, args.b) else 0
    else:
        sys.path.insert(1, str(HERE))
        from benchmarks.provenance import commit

        if args.against is not None:
            print(f"onnxq from {REPO} ({commit(REPO)}) against {args.against} ({commit(args.against)})", flush=True)
            against(args.against.resolve(), args.rounds, args.samples)
        else:
            print(f"onnxq from {REPO} ({commit(REPO)})", flush=True)
            timing(args.repeat, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
