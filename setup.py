"""Build step for the one compiled part of onnxq: the optional histogram counting kernel.

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled (no C
compiler), installation still succeeds and onnxq counts with numpy instead (same results, ~2x slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("onnxq.collect._counting", ["onnxq/collect/_counting.c"], optional=True,
                  extra_compile_args=["-O3"]),
    ]
)
